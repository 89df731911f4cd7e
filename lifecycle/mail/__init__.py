"""Email: rendering templates, building messages, transports."""

"""What the data holds: the categories, SKUs, attribute names and event names a flow or segment
can name, with how often each occurs (:mod:`.service`)."""

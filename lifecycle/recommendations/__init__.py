"""Products from order items: what to recommend to a customer, and where to review what
they bought.  :mod:`.compute` derives the products and co-purchase counts (with the full
segment refresh), :mod:`.load` reads a batch of mails' recommendations in one query,
:mod:`.urls` checks product links and builds review links."""

"""``lifecycle demo``: the product at work on a sample shop, in about a minute.

The demo loads a sample shop's history (:mod:`lifecycle.sample`), then runs
the real scheduler, flow engine, workers and web app on a clock that runs
fast (:class:`lifecycle.clock.FastClock`: by default 12 hours of shop time a
second), beside a live shop whose customers place orders
(:mod:`lifecycle.demo.shop`) and read the mail they get
(:mod:`lifecycle.demo.audience`), reaching the web app through its public
doors (:mod:`lifecycle.demo.doors`).  :mod:`lifecycle.demo.stage` sets a run
up, :mod:`lifecycle.demo.show` runs it.
"""

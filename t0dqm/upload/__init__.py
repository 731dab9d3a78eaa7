"""The DQM GUI upload endpoint's parts: receiving one upload into the dropbox (:mod:`.receiver`), the
uploader's identity over TLS (:mod:`.identity`) and the endpoint's Prometheus metrics (:mod:`.stats`).
The HTTP side is :mod:`t0dqm.upload_server`."""

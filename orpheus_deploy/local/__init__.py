"""`orpheus local`: the backend and the frontend on this machine, no Google Cloud.

``assets`` finds or fetches the model and the SNAC decoder (cache under ~/.cache/orpheus),
``download`` is a resumable HTTPS download, ``stack`` starts and supervises the two servers.
"""

"""The API edition on Ray Serve: one deployment replica per GPU, routed by model residency.

    settings.py  ClusterSettings (``ATELIER_CLUSTER_*``)
    ranking.py   the routing order as a plain function: GPU tier > RAM tier > room > queue
    router.py    Ray Serve request routers: ours (memory-aware) and round-robin
    replica.py   the GPU deployment: a residency manager and the generation stack per GPU
    ingress.py   the HTTP ingress: FileBrowser's credentials, then the model-routed call
    app.py       the application graph and ``atelier serve-cluster``

Ray is imported only here (``pip install 'atelier[cluster]'``); the single service never
needs it.
"""

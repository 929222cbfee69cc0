"""Generation on the residency manager: requests, jobs, the WebUI-compatible API.

    request.py      one checked request (WebUI field names)     service.py  build + submit
    prompts.py      the WebUI prompt language                   conditioning.py  embeddings
    samplers.py     WebUI sampler names -> diffusers schedulers networks.py  LoRA/TI/VAE
    runner.py       runs a request on a leased pipeline         infotext.py  PNG parameters
    fairqueue.py    per-user fairness                           jobs.py  the job queue
    images.py       saving under the owner's outputs and quota  routes.py / sdapi.py  HTTP

Nothing is imported here: torch and diffusers load only when a job runs.
"""

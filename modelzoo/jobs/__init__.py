"""The download queue: rows in the database (``store.py``), a runner per replica
(``runner.py``) and progress events for Server-Sent Events streams (``events.py``)."""

"""The application: run config, model provisioning, registry, audit, analysis of filings, run summary, and the
command line.

It stands on the libraries (``training``, ``evaluation``, ``data_contracts``, ``regulator``) and the floor
(``foundation``). Only its command line (``finetune.cli``, the roof) reaches up, to start the Prefect flows of
``flows/``; nothing else here imports Prefect (tests/test_layering.py).
"""

__version__ = "0.1.0"

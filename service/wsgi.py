"""The WSGI entry point for production: `gunicorn -c gunicorn.conf.py service.wsgi:app`.

The one module that builds the app at import time: each gunicorn worker imports it once.
"""
from service import create_app

app = create_app()

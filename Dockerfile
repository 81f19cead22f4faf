# avh-cds production image: gunicorn serving service.wsgi:app as a non-root user.
#   docker build -t avh-cds .
#   docker run -p 8080:8080 -e AVH_CDS_PUBLIC_URL=https://cds.example.org avh-cds
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AVH_CDS_BIND=0.0.0.0:8080 \
    AVH_CDS_CARDS_DIR=/app/cards \
    AVH_CDS_FIXTURES_DIR=/app/fhir_fixtures \
    PROMETHEUS_MULTIPROC_DIR=/tmp/avh-cds-metrics \
    MPLCONFIGDIR=/tmp/avh-cds-matplotlib \
    AVH_CDS_SQLITE_PATH=/var/lib/avh-cds/avh-cds.sqlite3

# The code stays root-owned (read-only to the service); only /var/lib/avh-cds is the service's to
# write (the SQLite feedback store when AVH_CDS_DATABASE_URL is not set).
RUN groupadd --system avh && useradd --system --gid avh --home-dir /app --shell /usr/sbin/nologin avh \
    && install -d -o avh -g avh /var/lib/avh-cds
WORKDIR /app

# The package (service/ and its dependencies) is installed; the card data and fixtures are read from
# /app (AVH_CDS_CARDS_DIR, AVH_CDS_FIXTURES_DIR), so an integrator can mount their own over them.
COPY pyproject.toml ./
COPY service ./service
RUN pip install .
COPY gunicorn.conf.py ./
COPY cards ./cards
COPY fhir_fixtures ./fhir_fixtures

USER avh
EXPOSE 8080
# python:slim has no curl: ask /healthz with the interpreter the image already has.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ['AVH_CDS_BIND'].rsplit(':', 1)[1]; sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2).status == 200 else 1)"]
CMD ["gunicorn", "-c", "gunicorn.conf.py", "service.wsgi:app"]

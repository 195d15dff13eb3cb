# The city brain's image: `cityedge ingest` (workers and the operator's page) with PostgreSQL.
# Build from the repository root: docker build -f deploy/citybrain.Dockerfile -t cityedge/citybrain:0.1.0 .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY . /src
RUN pip install '/src[ingest]' && rm -rf /src \
 && useradd --system --uid 10001 --home-dir /var/lib/cityedge --create-home cityedge

USER 10001
WORKDIR /var/lib/cityedge
# the operator's page (TLS; /healthz answers 200 while the database answers)
EXPOSE 8480
ENTRYPOINT ["cityedge"]
CMD ["ingest", "--help"]

# The gateway image (balena-ready). Build: docker build -t cityedge-gateway .
# The install steps are in scripts/install-gateway.sh so CI runs exactly them without Docker;
# it installs the gateway's rooms only (no simulators, scenes, demo or city-brain side).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY . /src
RUN PYTHON=python3 /src/scripts/install-gateway.sh /opt/cityedge /src && rm -rf /src

USER cityedge
WORKDIR /var/lib/cityedge
EXPOSE 8080
# /healthz answers 200 while no plug-in has failed for good (the site file must listen on 0.0.0.0:8080).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/opt/cityedge/bin/python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["/opt/cityedge/bin/cityedge"]
CMD ["run", "--config", "/etc/cityedge/site.yaml"]

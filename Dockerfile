# voice-gateway: a multi-stage image. The build stage installs the dependencies
# into a virtual environment; the runtime stage copies it with the code and runs
# as an unprivileged user, sessions on the /data volume. See README, Container.

FROM python:3.12-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN /opt/venv/bin/pip install . && /opt/venv/bin/pip uninstall --yes voice-gateway

FROM python:3.12-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8000 \
    GATEWAY_STORE=sqlite:////data/voice-gateway.db
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin gateway \
    && mkdir /data && chown gateway /data
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY gateway ./gateway
COPY web ./web
USER 10001
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ['GATEWAY_PORT'], timeout=4)"]
ENTRYPOINT ["python", "-m", "gateway"]

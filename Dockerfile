# The reconciler as a sidecar: configured entirely by environment, state and history on volumes,
# a read-only root filesystem, a non-root user.
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY reconciler ./reconciler
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir /src

FROM python:3.12-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin reconciler
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RECONCILER_TRIGGERS=/git/repo/triggers \
    RECONCILER_STATE=/var/lib/reconciler/state.db \
    RECONCILER_HISTORY=/var/lib/reconciler/history \
    RECONCILER_LISTEN=0.0.0.0:9090
USER 10001
EXPOSE 9090
ENTRYPOINT ["reconciler"]
CMD ["run"]

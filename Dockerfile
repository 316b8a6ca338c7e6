# syntax=docker/dockerfile:1
# Build: docker build -t iterable-consumer .
# Runs as a non-root user; the chart mounts the root filesystem read-only.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY consumer ./consumer
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --upgrade pip \
 && /opt/venv/bin/pip install . \
 && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +

FROM python:3.11-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 consumer \
 && useradd --system --uid 10001 --gid consumer --no-create-home --shell /usr/sbin/nologin consumer
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
EXPOSE 9400
ENTRYPOINT ["iterable-consumer"]
CMD ["run"]

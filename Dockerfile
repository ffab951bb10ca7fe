# One image for the speedq worker and the HTTP API (docker-compose.yml runs both).
FROM python:3.11-slim

# git: the local backend clones nanochat and pins a ref to a commit with it.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# The package's metadata first, so editing code does not re-download the dependencies' layer.
COPY pyproject.toml README.md ./
COPY speedq ./speedq
RUN pip install --no-cache-dir '.[api]'

RUN useradd --create-home speedq
USER speedq
ENV SPEEDQ_HOME=/home/speedq/state \
    PYTHONUNBUFFERED=1
CMD ["speedq", "worker"]

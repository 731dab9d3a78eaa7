FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends xrootd-client && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/t0dqm
COPY . .
RUN pip install --no-cache-dir .
USER nobody

# The t0dqm image: every worker role, beat, Flower and the CLI (docker-compose.yml).
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends xrootd-client && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/t0dqm
COPY . .
# the roles file goes to /usr/local/share/t0dqm/workers/roles.toml; /data is the data folder's mount point
RUN pip install --no-cache-dir . && mkdir -p /data && chown nobody:nogroup /data
USER nobody
ENV T0DQM_ROOT=/data
CMD ["t0dqm", "worker", "--list"]

# The XRootD archive endpoint of docker-compose.yml (tests and small deployments; production is EOS/CTA).
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends xrootd-server && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /srv/xrootd/store/dqm /var/spool/xrootd /run/xrootd \
 && chown -R xrootd:xrootd /srv/xrootd /var/spool/xrootd /run/xrootd
EXPOSE 1094
CMD ["xrootd", "-c", "/etc/xrootd/t0dqm.cfg", "-R", "xrootd"]

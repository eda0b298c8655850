# lb in a container: `docker build -t lb . && docker run -p 8080:8080 -p 9901:9901 lb`
# Mount your own config over /etc/lb/lb.yaml (`-v $PWD/my.yaml:/etc/lb/lb.yaml:ro`); the one
# baked in is config/lb.yaml with its listeners opened to 0.0.0.0, and its servers
# (127.0.0.1:9001/9002) are only an example. `docker kill -s HUP` reloads it; `docker stop`
# (SIGTERM) drains for defaults.shutdown_grace, so give it `--stop-timeout` a little longer.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY lb ./lb
COPY benchmarks ./benchmarks
RUN pip install . && rm -rf /src

RUN useradd --system --create-home --home-dir /home/lb --shell /usr/sbin/nologin lb \
    && mkdir -p /etc/lb
COPY config/lb.yaml /etc/lb/lb.yaml
RUN sed -i 's/bind: "127.0.0.1:/bind: "0.0.0.0:/' /etc/lb/lb.yaml \
    && lb check -c /etc/lb/lb.yaml

USER lb
WORKDIR /home/lb
EXPOSE 8080 9901
STOPSIGNAL SIGTERM
CMD ["lb", "run", "-c", "/etc/lb/lb.yaml"]

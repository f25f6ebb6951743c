# The worker image: meshing_core, the Airflow stack (the compose deployment runs Airflow from it
# too) and the DAG glue. Unbuilt in CI (no Docker daemon there); tests check its shape.
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt ./
RUN pip install -r requirements.txt \
 && pip install psycopg2-binary==2.9.13  # Airflow's Postgres metadata DB (compose deployment)

COPY pyproject.toml ./
COPY meshing_core/ meshing_core/
COPY plugins/ plugins/
COPY dags/ dags/
COPY configs/ configs/

# For a PyChunkedGraph (CAVE) graph: docker build --build-arg PYCHUNKEDGRAPH=<commit> . installs
# what `make pychunkedgraph` does (its read path's modules, then PyChunkedGraph with --no-deps).
ARG PYCHUNKEDGRAPH=""
RUN if [ -n "$PYCHUNKEDGRAPH" ]; then \
      apt-get update && apt-get install -y --no-install-recommends git \
      && rm -rf /var/lib/apt/lists/* \
      && pip install '.[pychunkedgraph]' \
      && pip install --no-deps "pychunkedgraph @ git+https://github.com/seung-lab/PyChunkedGraph@${PYCHUNKEDGRAPH}"; \
    fi

# workers exit 0 on SIGTERM after finishing (or releasing) the chunk in hand
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "meshing_core"]
CMD ["--help"]

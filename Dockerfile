# One image for every prim service. It starts no service by itself: each
# Deployment sets the command (prim-auth, prim-presence, prim-router or
# prim-edge), and running the image bare prints each service's settings.
#
#   docker build -t prim:0.1.0 .
#   docker run --rm prim:0.1.0
#   docker run --rm -e PRIM_MONGO_URL=... prim:0.1.0 prim-auth
#
# RUN --mount needs BuildKit, the default builder since Docker 23.

ARG PYTHON_IMAGE=python:3.11-slim

# Stage 1: build wheels of prim and of every dependency.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# README.md* matches nothing rather than failing when the README is absent.
COPY pyproject.toml README.md* ./
COPY prim ./prim
COPY services ./services
RUN pip wheel --wheel-dir /wheels .

# Stage 2: install the wheels into a clean image, without build tools.
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="prim" \
      org.opencontainers.image.description="prim instant-messaging services: auth, presence, router, edge" \
      org.opencontainers.image.licenses="MIT"
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1
# pip compiles the .pyc files here, so the services do not recompile their
# modules on every start under a read-only root filesystem.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels prim \
    && groupadd --gid 10001 prim \
    && useradd --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin prim

# The root filesystem is read-only in the Kubernetes pods.
ENV PYTHONDONTWRITEBYTECODE=1

# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /tmp

# Ports: auth 50051, presence 50052, router 50053, edge gRPC 50060, edge HTTP 8089.
EXPOSE 50051 50052 50053 50060 8089

CMD ["sh", "-c", "echo 'This image runs one prim service; set the command to prim-auth, prim-presence, prim-router or prim-edge.'; for service in prim-auth prim-presence prim-router prim-edge; do echo; $service --help; done"]

# The Quench image: one image for every `quench` command that compose runs (setup, the workers,
# the webhook, the codec server); see docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /app

# Dependencies first, in their own layer, so a code change does not reinstall them: the
# runtime lock (`make lock`), every package pinned and checked against its hash, the same
# versions the test suite ran; the test extra stays out of the image.
COPY requirements/runtime.txt requirements/
RUN pip install --require-hashes -r requirements/runtime.txt

# .dockerignore admits only the project's own packages and modules. Quench is built by the
# lock's setuptools, and brings in nothing the lock did not.
COPY . .
RUN pip install --no-deps --no-build-isolation . && rm -rf build ./*.egg-info

# The code stays root-owned and read-only to the process that runs it.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/quench quench
USER 10001:10001

# `quench` is pyproject's console script; with no command given, a worker on both queues.
CMD ["quench", "worker"]

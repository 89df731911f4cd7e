# Lifecycle's one image, for every service of docker-compose.yml (migrate, worker, scheduler,
# web): the project with its locked dependencies, run as the unprivileged user `lifecycle`.
# The base image and uv are pinned to exact versions, so a rebuild gets the same software.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1

RUN pip install --no-cache-dir uv==0.13.9 \
    && groupadd --system --gid 10001 lifecycle \
    && useradd --system --uid 10001 --gid lifecycle --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin lifecycle

WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY lifecycle ./lifecycle
COPY alembic ./alembic
COPY alembic.ini ./
COPY templates ./templates
COPY flows ./flows
COPY campaigns ./campaigns
# Code and dependencies belong to root and are only read by the app: a compromised process
# cannot rewrite them. Nothing in the image is writable by `lifecycle`; its data lives in
# PostgreSQL (and mail in Mailpit or SendGrid), never in the container.
RUN uv sync --frozen --no-dev && chmod -R a+rX /app
ENV PATH="/app/.venv/bin:$PATH"

USER lifecycle:lifecycle
# No default service: `docker run` without a command prints the commands. Each service names
# its own (`lifecycle web`, `lifecycle worker` …) and its database through
# LIFECYCLE_DATABASE_URL; `lifecycle run` and the SQLite default are for a checkout, not this.
CMD ["lifecycle", "--help"]

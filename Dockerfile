# Lifecycle image for docker-compose.yml: the project with its locked dependencies.
FROM python:3.11-slim
RUN pip install --no-cache-dir uv
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY lifecycle ./lifecycle
COPY alembic ./alembic
COPY alembic.ini ./
COPY templates ./templates
COPY flows ./flows
RUN uv sync --frozen --no-dev
ENV PATH="/app/.venv/bin:$PATH"
CMD ["lifecycle", "run", "--host", "0.0.0.0"]

# syntax=docker/dockerfile:1
# sessionlb container: build with dev dependencies, run with production ones only.
#   docker build -t sessionlb .
#   docker run --rm -p 8080:8080 -v $PWD/my.json:/etc/sessionlb/config.json:ro sessionlb
# In-flight requests get `shutdownTimeout` (default 30s) after SIGTERM: stop with `docker stop -t 35`.

ARG NODE_IMAGE=node:24-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
COPY src ./src
# `npm ci` runs the `prepare` script, which compiles src/ to dist/.
RUN npm ci --no-audit --no-fund

FROM ${NODE_IMAGE}
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY config ./config
# A starting point; mount your own file over it.
COPY config/examples/docker.json /etc/sessionlb/config.json

# The official image's unprivileged user.
USER node
EXPOSE 8080 9100
# The admin listener's /healthz, checked with node itself (slim images have no curl).
ENV SESSIONLB_HEALTHCHECK_URL=http://127.0.0.1:9100/healthz
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["node", "-e", "require('http').get(process.env.SESSIONLB_HEALTHCHECK_URL, { timeout: 2000 }, (r) => process.exit(r.statusCode === 200 ? 0 : 1)).on('error', () => process.exit(1)).on('timeout', () => process.exit(1))"]
CMD ["node", "--max-semi-space-size=8", "dist/cli.js", "run", "--config", "/etc/sessionlb/config.json"]

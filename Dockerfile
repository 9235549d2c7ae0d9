# The one Pulse image: every service in docker-compose.yml runs it with
# its own command (pulse ingest, pulse stream, ...).
#
#   docker build -t pulse-rt/pulse:local .
#
# Bases are pinned by exact version (deploy/deploy_test.go checks it);
# golang's follows go.mod's go line.
FROM golang:1.26.8 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /pulse ./cmd/pulse

# Alpine rather than distroless: busybox's wget runs the compose health
# checks (GET /readyz) inside the container.
FROM alpine:3.22.1
RUN apk add --no-cache ca-certificates tzdata \
	&& addgroup -S -g 10001 pulse \
	&& adduser -S -D -H -u 10001 -G pulse pulse \
	&& mkdir -p /var/lib/pulse /etc/pulse \
	&& chown pulse:pulse /var/lib/pulse
COPY --from=build /pulse /usr/local/bin/pulse
# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001
WORKDIR /var/lib/pulse
# ingest, scorer, stream (health, metrics), webhooks, history (health,
# metrics), destinations (admin API, health, metrics).
EXPOSE 8080 8081 8082 8083 8084 8085
ENTRYPOINT ["pulse"]
CMD ["help"]

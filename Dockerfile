# The one Pulse binary. Build: docker build -t pulse .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /pulse ./cmd/pulse

FROM gcr.io/distroless/static-debian12
COPY --from=build /pulse /pulse
ENTRYPOINT ["/pulse"]

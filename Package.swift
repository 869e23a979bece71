// swift-tools-version: 6.2
// Sluice: a multi-tenant gateway for OpenAI-compatible inference servers.
// One module per concern; docs/architecture.md says which module may import which.
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "sluice",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "sluice", targets: ["sluice"]),
        .executable(name: "sluice-mock-upstream", targets: ["sluice-mock-upstream"]),
        .library(name: "SluiceRedis", targets: ["SluiceRedis"]),
        .library(name: "SluiceLimiter", targets: ["SluiceLimiter"]),
        // For the microbenchmarks package (Benchmarks/), which CI does not build.
        .library(name: "SluiceDataPlane", targets: ["SluiceDataPlane"]),
        .library(name: "SluiceTenancy", targets: ["SluiceTenancy"]),
        .library(name: "SluiceLog", targets: ["SluiceLog"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        // The mock model server's Realtime endpoint only (the gateway speaks WebSocket with NIO's own).
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket.git", from: "2.8.1"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.8.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-distributed-tracing.git", from: "1.7.3"),
        // OTLP/HTTP only: the gRPC exporter would pull in grpc-swift.
        .package(url: "https://github.com/swift-otel/swift-otel.git", from: "1.6.0", traits: ["OTLPHTTP"]),
        // KServe v2 inference over gRPC (the listener and the backend client); the generated code is committed.
        .package(url: "https://github.com/grpc/grpc-swift-2.git", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", from: "2.9.2"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
    ],
    targets: [
        // hiredis (Debian 12: 0.14; newer distributions: 1.x). Only the reply reader is used.
        .systemLibrary(
            name: "CHiredis",
            providers: [.apt(["libhiredis-dev"])]
        ),
        // Redis client: RESP over a SwiftNIO channel, pipelining, pool, scripts, pub/sub.
        .target(
            name: "SluiceRedis",
            dependencies: [
                "CHiredis", "SluiceNet",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        // Connecting to addresses without the resolver; resolving names off the event loops.
        .target(
            name: "SluiceNet",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        // Running Swift tasks on a NIO event loop (no hop to the global pool per request).
        .target(
            name: "SluiceConcurrency",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        // Distributed limits: admit/settle over the Lua scripts in lua/ (embedded at build time),
        // deny cache, circuit breaker and the fail-closed/open/local policies.
        .target(
            name: "SluiceLimiter",
            dependencies: [
                "SluiceRedis", "SluiceConcurrency",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SluiceLimiterTests",
            dependencies: [
                "SluiceLimiter", "SluiceRedis", "SluiceTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        // Tenants, API keys (format, HMAC), PostgreSQL schema and store, key resolution chain.
        .target(
            name: "SluiceTenancy",
            dependencies: [
                "SluiceRedis", "SluiceLimiter",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SluiceTenancyTests",
            dependencies: [
                "SluiceTenancy", "SluiceLimiter", "SluiceRedis", "SluiceTestSupport",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        // Money: the price catalogue (versions in micro-USD), statements, exports to billing
        // systems and webhooks.
        .target(
            name: "SluiceBilling",
            dependencies: [
                "SluiceTenancy", "SluiceLimiter", "SluiceUpstream",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SluiceBillingTests",
            dependencies: [
                "SluiceBilling", "SluiceTenancy", "SluiceTestSupport", "SluiceUpstream", "SluiceLimiter",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // Webhooks (Standard Webhooks): signing, endpoint secrets sealed at rest, the outbox's
        // dispatcher with retries, and the periodic events.
        .target(
            name: "SluiceWebhooks",
            dependencies: [
                "SluiceTenancy", "SluiceLimiter", "SluiceUpstream",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SluiceWebhooksTests",
            dependencies: [
                "SluiceWebhooks", "SluiceTenancy", "SluiceLimiter", "SluiceTestSupport",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The admin API on the admin listener: JWT roles, tenants, keys, usage, OpenAPI document.
        .target(
            name: "SluiceAdminAPI",
            dependencies: [
                "SluiceTenancy", "SluiceLimiter", "SluiceRedis", "SluiceErrorBody", "SluiceBilling", "SluiceWebhooks", "SluiceNet",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Logging", package: "swift-log"),
            ],
            // The admin web UI: plain files compiled into the binary (no bundle to ship, no Node).
            resources: [.embedInCode("UI/index.html"), .embedInCode("UI/app.js"), .embedInCode("UI/app.css")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SluiceAdminAPITests",
            dependencies: [
                "SluiceAdminAPI", "SluiceTenancy", "SluiceLimiter", "SluiceRedis", "SluiceTestSupport", "SluiceBilling", "SluiceWebhooks",
                "SluiceUpstream",
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The upstream HTTP/1.1 client: keep-alive pools per backend and event loop, deadlines,
        // backends with least-outstanding selection and passive ejection.
        .target(
            name: "SluiceUpstream",
            dependencies: [
                "SluiceNet",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        // The OpenAI-shaped error body, shared by the inference and admin APIs.
        .target(
            name: "SluiceErrorBody",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strict
        ),
        // The inference request pipeline: key → admit → route → forward → settle. No HTTP
        // framework here: the listener is a thin adapter.
        .target(
            name: "SluiceDataPlane",
            dependencies: [
                "SluiceTenancy", "SluiceLimiter", "SluiceUpstream", "SluiceErrorBody", "SluiceConcurrency", "SluiceBilling",
                "SluiceNet",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        // Log lines as JSON bytes and the bounded background writer that puts them on stdout.
        .target(
            name: "SluiceLog",
            dependencies: [.product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SluiceLogTests",
            dependencies: ["SluiceLog", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),
        // An OpenAI-compatible mock model server (tests, demo, load tests), and its executable.
        .target(
            name: "SluiceMockUpstream",
            dependencies: [
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "sluice-mock-upstream",
            dependencies: ["SluiceMockUpstream", .product(name: "Hummingbird", package: "hummingbird"),
                           .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket")],
            swiftSettings: strict
        ),
        // One gateway replica: configuration, the public and admin listeners, operations
        // endpoints, metering, all in one ServiceGroup.
        .target(
            name: "SluiceServer",
            dependencies: [
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                "SluiceDataPlane", "SluiceAdminAPI", "SluiceTenancy", "SluiceLimiter", "SluiceRedis", "SluiceUpstream",
                "SluiceLog", "SluiceConcurrency", "SluiceBilling", "SluiceWebhooks", "SluiceNet", "SluiceGRPC",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "OTel", package: "swift-otel"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: strict
        ),
        // KServe v2 (Open Inference Protocol) over gRPC: the listener, proxied to the models'
        // gRPC backends under the same keys, limits and ledger as the REST API.
        .target(
            name: "SluiceGRPC",
            dependencies: [
                "SluiceDataPlane", "SluiceUpstream",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2Posix", package: "grpc-swift-nio-transport"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            exclude: ["Generated/README.md"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SluiceNetTests",
            dependencies: [
                "SluiceNet",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SluiceGRPCTests",
            dependencies: [
                "SluiceGRPC", "SluiceDataPlane",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SluiceUpstreamTests",
            dependencies: [
                "SluiceUpstream", "SluiceMockUpstream", "SluiceTestSupport",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SluiceDataPlaneTests",
            dependencies: ["SluiceDataPlane", "SluiceLimiter", "SluiceNet", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SluiceServerTests",
            dependencies: [
                "SluiceServer", "SluiceMockUpstream", "SluiceTenancy", "SluiceLimiter", "SluiceRedis", "SluiceTestSupport", "SluiceUpstream",
                "SluiceDataPlane", "SluiceBilling", "SluiceNet", "SluiceAdminAPI",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The one executable: sluice migrate | serve | admin ... Only it bootstraps logging.
        .executableTarget(
            name: "sluice",
            dependencies: [
                "SluiceTenancy", "SluiceLimiter", "SluiceAdminAPI", "SluiceRedis", "SluiceUpstream", "SluiceDataPlane",
                "SluiceServer", "SluiceLog",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // Helpers for tests and load tools: finding the development stack, spawning
        // private redis-server processes for restart/pause tests.
        .target(
            name: "SluiceTestSupport",
            dependencies: [
                "SluiceRedis", "SluiceTenancy", "SluiceNet",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SluiceRedisTests",
            dependencies: [
                "SluiceRedis", "SluiceTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        // The fleet load driver (loadtest/fleet.sh).
        .executableTarget(
            name: "sluice-load",
            dependencies: [
                "SluiceUpstream",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            path: "loadtest/Load",
            swiftSettings: strict
        ),
        // Benchmark driver (loadtest/redis-bench.sh, limiter-bench.sh, key-bench.sh).
        .executableTarget(
            name: "sluice-bench",
            dependencies: [
                "SluiceRedis", "SluiceLimiter", "SluiceTenancy",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "loadtest/Bench",
            swiftSettings: strict
        ),
    ]
)

// swift-tools-version: 6.2
// Microbenchmarks of the hot path's pieces, with allocation counts (ordo-one/benchmark). A
// package of its own so CI never builds it:  cd Benchmarks && swift package benchmark
import PackageDescription

let package = Package(
    name: "sluice-benchmarks",
    dependencies: [
        .package(url: "https://github.com/ordo-one/benchmark.git", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(name: "sluice", path: ".."),
    ],
    targets: [
        .executableTarget(
            name: "HotPath",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "SluiceDataPlane", package: "sluice"),
                .product(name: "SluiceTenancy", package: "sluice"),
                .product(name: "SluiceLog", package: "sluice"),
            ],
            path: "Benchmarks/HotPath",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)

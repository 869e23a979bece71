import Foundation
import SluiceDataPlane
import SluiceUpstream
import Testing

@testable import SluiceServer

/// The gRPC listener and gRPC backends in the configuration.
@Suite("gRPC settings")
struct GRPCSettingsTests {
    @Test func grpcBackendsServeOverTheGRPCListenerOnly() throws {
        let configuration = try RedisSettingsTests.load("""
            grpc_listen: 127.0.0.1:8001
            """)
        #expect(configuration.grpcListen == .init(host: "127.0.0.1", port: 8001))
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-\(UUID().uuidString).yaml").path
        FileManager.default.createFile(atPath: file, contents: Data("""
            grpc_listen: 127.0.0.1:8001
            models:
              - name: triton
                backends: [{url: "http://10.0.0.1:8000"}, {url: "grpc://10.0.0.1:8001"}, {url: "grpcs://10.0.0.2:8001"}]
            """.utf8))
        defer { try? FileManager.default.removeItem(atPath: file) }
        let catalog = try GatewayConfiguration.load(file: file, environment: RedisSettingsTests.secrets).catalog()
        let route = try #require(catalog.routes["triton"])
        #expect(route.backends.map(\.url) == ["http://10.0.0.1:8000"])
        #expect(route.grpcBackends.map(\.url) == ["grpc://10.0.0.1:8001", "grpcs://10.0.0.2:8001"])
        #expect(route.grpcBackends.map(\.useTLS) == [false, true])
        #expect(catalog.backends.count == 1)  // health checks and /v1/models see the HTTP one only
    }

    @Test func badGRPCSettingsNameTheirKey() {
        RedisSettingsTests.expectRefused("grpc_listen: 127.0.0.1:8080\n", key: "grpc_listen")  // the public listener's
        RedisSettingsTests.expectRefused("grpc_listen: nowhere\n", key: "grpc_listen")
        for (url, problem) in [("grpc://10.0.0.1:8001", "no grpc_listen"), ("grpc://10.0.0.1", "no port"),
                               ("grpc://10.0.0.1:8001/v2", "a path")] {
            let listen = problem == "no grpc_listen" ? "" : "grpc_listen: 127.0.0.1:8001\n"
            // A second model, after the helper's first.
            RedisSettingsTests.expectRefused("  - name: g\n    backends: [{url: \"\(url)\"}]\n" + listen,
                                             key: "models[1].backends[0].url")
        }
    }
}

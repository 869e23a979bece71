import Foundation
import NIOSSL
import SluiceMockUpstream
import SluiceTestSupport
import Testing

@testable import SluiceServer

/// Backends as they are deployed: behind an API key (vLLM's `--api-key`), wanting extra
/// headers, behind a private CA that wants a client certificate.
@Suite("Backends as deployed")
struct BackendDeploymentTests {
    /// The models of `yaml` (read as `sluice serve` reads its file and environment) added to
    /// the harness's configuration.
    static func models(_ yaml: String, environment: [String: String] = [:]) throws -> [GatewayConfiguration.ModelSettings] {
        try RedisSettingsTests.load(yaml, environment: environment).models.filter { $0.name != "m" }
    }

    @Test func anAPIKeyFromTheEnvironmentOrAFileAndExtraHeadersGoToTheBackend() async throws {
        var guarded = MockUpstreamBehavior()
        guarded.completionTokens = 4
        guarded.requiredHeaders = [("authorization", "Bearer vllm-secret-1"), ("x-team", "ml")]
        let keyFile = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-key-\(UUID().uuidString)").path
        FileManager.default.createFile(atPath: keyFile, contents: Data("vllm-secret-1\n".utf8))
        defer { try? FileManager.default.removeItem(atPath: keyFile) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            let port = try await GatewayHarness.startMock(guarded, in: &group)
            let backend = "url: \"http://127.0.0.1:\(port)\""
            let models = try Self.models("""
                  - name: keyed-env
                    backends: [{\(backend), api_key_env: VLLM_KEY, headers: {x-team: ml}}]
                  - name: keyed-file
                    backends: [{\(backend), api_key_file: \(keyFile), headers: {X-Team: ml}}]
                  - name: unkeyed
                    backends: [{\(backend), headers: {x-team: ml}}]

                """, environment: ["VLLM_KEY": "vllm-secret-1"])
            try await GatewayHarness.run(models: ["keyed-env", "keyed-file", "unkeyed"],
                                         configure: { $0.models += models }) { gateway in
                for model in ["keyed-env", "keyed-file"] {
                    let response = try await gateway.chat(model: model)
                    #expect(response.status == 200, "\(model): \(response.body)")
                }
                let refused = try await gateway.chat(model: "unkeyed")
                // The backend's 401 is the gateway's problem, not the client's key's.
                #expect(refused.status == 502 && refused.errorCode == "upstream_error", "\(refused.status) \(refused.body)")
                #expect(!refused.body.contains("vllm-secret"))
            }
            group.cancelAll()
        }
    }

    @Test func aPrivateCAAndAClientCertificateReachAnMTLSBackend() async throws {
        let ca = try await PrivateCertificateAuthority()
        defer { ca.remove() }
        var tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(ca.serverCertificate).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: ca.serverKey, format: .pem)))
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(ca.caFile))
        tls.certificateVerification = .noHostnameVerification  // a client certificate from the CA is required
        try await withThrowingTaskGroup(of: Void.self) { group in
            let port = try await GatewayHarness.startMock(MockUpstreamBehavior(), tls: tls, in: &group)
            let backend = "url: \"https://127.0.0.1:\(port)\""
            let models = try Self.models("""
                  - name: mtls
                    backends: [{\(backend), tls: {ca_file: \(ca.caFile), cert_file: \(ca.clientCertificate), key_file: \(ca.clientKey)}}]
                  - name: no-client-certificate
                    backends: [{\(backend), tls: {ca_file: \(ca.caFile)}}]
                  - name: system-trust
                    backends: [{\(backend)}]

                """)
            try await GatewayHarness.run(models: ["mtls", "no-client-certificate", "system-trust"],
                                         configure: { $0.models += models }) { gateway in
                let ok = try await gateway.chat(model: "mtls")
                #expect(ok.status == 200, "\(ok.body)")
                for model in ["no-client-certificate", "system-trust"] {
                    let refused = try await gateway.chat(model: model)
                    // TLS 1.3 refuses a missing client certificate after the handshake: the request may
                    // have gone out, so the refusal shows as a broken connection or, late, a timeout.
                    #expect([502, 503, 504].contains(refused.status) && refused.errorCode?.hasPrefix("upstream") == true,
                            "\(model): \(refused.status) \(refused.body)")
                }
            }
            group.cancelAll()
        }
    }

    @Test func badBackendSettingsNameTheirKey() throws {
        let url = "url: \"http://127.0.0.1:9\""
        for (backend, key, environment) in [
            ("{\(url), api_key_env: NOT_SET}", "models[1].backends[0].api_key_env", [String: String]()),
            ("{\(url), api_key_file: /nonexistent/key}", "models[1].backends[0].api_key_file", [:]),
            ("{\(url), api_key_env: K, api_key_file: /x}", "models[1].backends[0].api_key_file", ["K": "k"]),
            ("{\(url), headers: {host: evil}}", "models[1].backends[0].headers.host", [:]),
            ("{\(url), headers: {\"bad name\": x}}", "models[1].backends[0].headers.bad name", [:]),
            ("{\(url), headers: {x-a: \"line\\nbreak\"}}", "models[1].backends[0].headers.x-a", [:]),
            ("{\(url), api_key_env: K, headers: {authorization: x}}", "models[1].backends[0].headers.authorization", ["K": "k"]),
            ("{\(url), tls: {cert_file: /x}}", "models[1].backends[0].tls.key_file", [:]),
            ("{\(url), tls: {ca_file: /nonexistent/ca.pem}}", "models[1].backends[0].tls", [:]),
        ] {
            RedisSettingsTests.expectRefused("  - name: x\n    backends: [\(backend)]\n", key: key, environment: environment)
        }
    }
}

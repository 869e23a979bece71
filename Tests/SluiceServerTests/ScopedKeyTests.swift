import Foundation
import SluiceAdminAPI
import SluiceDataPlane
import SluiceLimiter
import SluiceNet
import SluiceTenancy
import SluiceTestSupport
import Testing

@testable import SluiceServer

/// Keys limited to endpoints, source networks and an output cap, through a whole gateway:
/// each refusal has its own code, comes before any upstream call (nothing is billed), and an
/// admin's change reaches the data plane at once.
@Suite("Scoped keys")
struct ScopedKeyTests {
    /// A key of the harness's tenant with `scope`; its plaintext.
    static func key(_ gateway: GatewayHarness, scope: KeyScope, models: [String]? = nil) async throws -> (id: String, key: String) {
        let (record, key) = try await gateway.store.createKey(
            tenantID: gateway.tenant.id, name: "scoped", limits: .init(), models: models, expiresAt: nil, scope: scope,
            hasher: KeyHasher(pepper: "gateway-test-pepper"), actor: "test")
        return (record.id, key)
    }

    static func embed(_ gateway: GatewayHarness, key: String, headers: [(String, String)] = []) async throws -> RawHTTPClient.Response {
        try await RawHTTPClient.request(port: gateway.publicPort, path: "/v1/embeddings",
                                        headers: [("authorization", "Bearer \(key)")] + headers,
                                        body: #"{"model": "mock-model", "input": "hello"}"#)
    }

    @Test func endpointsOutsideTheScopeAreRefusedBeforeTheBody() async throws {
        try await GatewayHarness.run { gateway in
            let (_, key) = try await Self.key(gateway, scope: KeyScope(endpoints: ["/v1/embeddings"]))
            #expect(try await Self.embed(gateway, key: key).status == 200)
            let chat = try await gateway.chat(key: key)
            #expect(chat.status == 403 && chat.errorCode == "endpoint_not_allowed", "\(chat.body)")
            let models = try await RawHTTPClient.request(port: gateway.publicPort, method: "GET", path: "/v1/models",
                                                         headers: [("authorization", "Bearer \(key)")])
            #expect(models.status == 403 && models.errorCode == "endpoint_not_allowed")

            // Refused from the headers: a body announced and never sent is not waited for.
            let connection = try await RawConnection.open(port: gateway.publicPort)
            try await connection.send("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer \(key)\r\n"
                                      + "content-type: application/json\r\ncontent-length: 1000\r\n\r\n")
            #expect(await connection.waitForClose(timeout: .seconds(5)))
            #expect(connection.received.hasPrefix("HTTP/1.1 403") && connection.received.contains("endpoint_not_allowed"))
            let billed = try await GatewayHardeningTests.ledger(tenant: gateway.tenant.id, atLeast: 1)
            #expect(billed.count == 1, "only the allowed call is in the ledger")
        }
    }

    @Test func sourceNetworksAreThePeersUnlessATrustedProxyNamesTheClient() async throws {
        // Loopback is the peer here; with no trusted proxy, a forged header changes nothing.
        try await GatewayHarness.run { gateway in
            let (_, elsewhere) = try await Self.key(gateway, scope: KeyScope(networks: ["10.0.0.0/8", "2001:db8::/32"]))
            let (_, local) = try await Self.key(gateway, scope: KeyScope(networks: ["127.0.0.0/8"]))
            let refused = try await Self.embed(gateway, key: elsewhere, headers: [("x-forwarded-for", "10.1.2.3")])
            #expect(refused.status == 403 && refused.errorCode == "source_network_not_allowed", "\(refused.body)")
            #expect(!refused.body.contains("127.0.0.1"), "the refusal does not echo the address")
            #expect(try await Self.embed(gateway, key: local).status == 200)
        }
        // Behind a trusted proxy (loopback), the client is the rightmost hop the proxy did not add.
        let policy = ClientAddressPolicy(header: "x-forwarded-for", trustedProxies: [IPNetwork("127.0.0.0/8")!])
        try await GatewayHarness.run(clientAddress: policy) { gateway in
            let (_, key) = try await Self.key(gateway, scope: KeyScope(networks: ["203.0.113.0/24"]))
            let cases: [(String?, Int)] = [
                ("203.0.113.9", 200),
                ("198.51.100.1", 403),
                // The client wrote the left entry itself; the proxy appended what it saw.
                ("203.0.113.9, 198.51.100.1", 403),
                ("198.51.100.1, 203.0.113.9", 200),
                // A trusted hop in between is skipped.
                ("203.0.113.9, 127.0.0.5", 200),
                ("not-an-address", 403),
                ("203.0.113.9:443", 403),
                (nil, 403),  // then the peer (loopback) is the client
            ]
            for (header, status) in cases {
                let response = try await Self.embed(gateway, key: key, headers: header.map { [("x-forwarded-for", $0)] } ?? [])
                #expect(response.status == status, "x-forwarded-for \(header ?? "absent"): \(response.status) \(response.body)")
                if status == 403 { #expect(response.errorCode == "source_network_not_allowed") }
            }
        }
    }

    @Test func theOutputCapRefusesMoreAndFillsInWhatIsLeftOut() async throws {
        try await GatewayHarness.run { gateway in
            let (_, key) = try await Self.key(gateway, scope: KeyScope(maxOutputTokens: 5))
            for extra in [#", "max_tokens": 6"#, #", "max_completion_tokens": 6"#,
                          #", "max_completion_tokens": 5, "max_tokens": 100000"#] {
                let response = try await gateway.chat(model: "mock-model", key: key, extra: extra)
                #expect(response.status == 400 && response.errorCode == "max_tokens_above_key_limit", "\(extra): \(response.body)")
            }
            // Left out, the cap is sent upstream: the mock would write 8 tokens.
            for stream in [false, true] {
                let response = try await gateway.chat(model: "mock-model", key: key, stream: stream)
                #expect(response.status == 200, "\(response.body)")
                // A stream's usage chunk is the gateway's (the client did not ask): count the text chunks.
                let written = stream ? response.body.components(separatedBy: #""content":"tok ""#).count - 1
                    : response.json["usage"].flatMap { ($0 as? [String: Any])?["completion_tokens"] as? Int } ?? -1
                #expect(written == 5, "stream \(stream): \(response.body.suffix(400))")
            }
            let asked = try await gateway.chat(model: "mock-model", key: key, extra: #", "max_tokens": 3"#)
            #expect(asked.status == 200 && asked.body.contains("\"completion_tokens\":3"), "\(asked.body)")
            let rows = try await GatewayHardeningTests.ledger(tenant: gateway.tenant.id, atLeast: 3)
            #expect(rows.map(\.completion).sorted() == [3, 5, 5], "only the three answered calls are billed")
        }
    }

    @Test func aPatchedScopeReachesTheDataPlaneAtOnce() async throws {
        try await GatewayHarness.run { gateway in
            let (id, key) = try await Self.key(gateway, scope: KeyScope())
            #expect(try await gateway.chat(key: key).status == 200)
            let token = try await AdminAuthenticator(hmacSecret: GatewayHarness.secret)
                .token(AdminClaims(sub: "scope-test", role: .platformAdmin, tenant: nil, expires: Date().addingTimeInterval(300)))
            let patch = try await RawHTTPClient.request(
                port: gateway.adminPort, method: "PATCH", path: "/admin/v1/keys/\(id)",
                headers: [("authorization", "Bearer \(token)")], body: #"{"scope": {"endpoints": ["/v1/embeddings"]}}"#)
            #expect(patch.status == 200, "\(patch.body)")
            // The admin API publishes the invalidation before it answers; replicas drop the copy.
            var status = 0
            for _ in 0..<50 {
                status = try await gateway.chat(key: key).status
                if status == 403 { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(status == 403, "the patched scope applies within a second")
        }
    }
}

/// The listener's client-address settings.
@Suite("Client address settings")
struct ClientAddressSettingsTests {
    @Test func aHeaderAndTrustedProxiesFromTheFileAndBadOnesNamed() throws {
        let loaded = try RedisSettingsTests.load("listener:\n  client_address_header: X-Forwarded-For\n  trusted_proxies: [10.0.0.0/8, \"::1\"]\n")
        #expect(loaded.clientAddress.header == "x-forwarded-for")
        #expect(loaded.clientAddress.trustedProxies.map(\.description) == ["10.0.0.0/8", "::1/128"])
        for yaml in ["listener:\n  trusted_proxies: [10.0.0.1/8]\n", "listener:\n  trusted_proxies: [proxy.internal]\n",
                     "listener:\n  client_address_header: \"x forwarded\"\n", "listener:\n  client_address_header: \"\"\n"] {
            #expect(throws: ConfigurationError.self, "\(yaml)") { _ = try RedisSettingsTests.load(yaml) }
        }
    }
}

/// The `admin_oidc:` settings.
@Suite("Identity provider settings")
struct AdminOIDCSettingsTests {
    @Test func theSectionIsReadAndBadOnesNamed() throws {
        let yaml = """
            admin_oidc:
              issuer: https://login.example.com/realms/ops
              audience: sluice-admin
              roles: {ops: platform_admin, acme-staff: tenant_viewer}
              leeway_seconds: 30
            """
        let oidc = try #require(try RedisSettingsTests.load(yaml + "\n").adminOIDC)
        #expect(oidc.issuer == "https://login.example.com/realms/ops" && oidc.audience == "sluice-admin")
        #expect(oidc.roles == ["ops": .platformAdmin, "acme-staff": .tenantViewer] && oidc.rolesClaim == "groups")
        #expect(oidc.discoveryURL == "https://login.example.com/realms/ops/.well-known/openid-configuration")
        for (bad, key) in [("admin_oidc:\n  issuer: login.example.com\n  audience: a\n  roles: {x: platform_admin}\n", "admin_oidc.issuer"),
                           ("admin_oidc:\n  issuer: https://x\n  roles: {x: platform_admin}\n", "admin_oidc.audience"),
                           ("admin_oidc:\n  issuer: https://x\n  audience: a\n  roles: {x: root}\n", "admin_oidc.roles.x"),
                           ("admin_oidc:\n  issuer: https://x\n  audience: a\n", "admin_oidc.roles"),
                           ("admin_oidc:\n  issuer: https://x\n  audience: a\n  roles: {x: platform_admin}\n  jwks: y\n", "admin_oidc.jwks")] {
            RedisSettingsTests.expectRefused(bad, key: key)
        }
    }
}

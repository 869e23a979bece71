import Foundation
import Hummingbird
import HummingbirdTesting
import JWTKit
import SluiceAdminAPI
import SluiceTenancy
import Testing

/// Every endpoint × every role × own/foreign tenant.
@Suite("Admin API authorization matrix")
struct AdminRBACTests {
    enum Target: String, CaseIterable { case own, foreign }

    struct Endpoint: Sendable {
        let name: String
        let method: HTTPRequest.Method
        /// Builds the URI (and body) for a target tenant; may create fresh keys.
        let request: @Sendable (AdminHarness, Tenant) async throws -> (String, String?)
        /// Expected status by role, for own and foreign tenants (nil: the endpoint names no tenant).
        let expected: [AdminRole: (own: Int, foreign: Int?)]
    }

    static let endpoints: [Endpoint] = [
        Endpoint(name: "create tenant", method: .post, request: { _, _ in ("/admin/v1/tenants", #"{"name": "matrix"}"#) },
                 expected: [.platformAdmin: (201, nil), .tenantAdmin: (403, nil), .tenantViewer: (403, nil)]),
        Endpoint(name: "list tenants", method: .get, request: { _, _ in ("/admin/v1/tenants", nil) },
                 expected: [.platformAdmin: (200, nil), .tenantAdmin: (403, nil), .tenantViewer: (403, nil)]),
        Endpoint(name: "get tenant", method: .get, request: { _, t in ("/admin/v1/tenants/\(t.id)", nil) },
                 expected: [.platformAdmin: (200, 200), .tenantAdmin: (200, 404), .tenantViewer: (200, 404)]),
        Endpoint(name: "patch tenant", method: .patch,
                 request: { _, t in ("/admin/v1/tenants/\(t.id)", #"{"limits": {"requests_per_minute": 100}}"#) },
                 expected: [.platformAdmin: (200, 200), .tenantAdmin: (403, 404), .tenantViewer: (403, 404)]),
        Endpoint(name: "create key", method: .post, request: { _, t in ("/admin/v1/tenants/\(t.id)/keys", #"{"name": "k"}"#) },
                 expected: [.platformAdmin: (201, 201), .tenantAdmin: (201, 404), .tenantViewer: (403, 404)]),
        Endpoint(name: "list keys", method: .get, request: { _, t in ("/admin/v1/tenants/\(t.id)/keys", nil) },
                 expected: [.platformAdmin: (200, 200), .tenantAdmin: (200, 404), .tenantViewer: (200, 404)]),
        Endpoint(name: "patch key", method: .patch,
                 request: { h, t in ("/admin/v1/keys/\(try await h.newKey(t).id)", #"{"scope": {"max_output_tokens": 100}}"#) },
                 expected: [.platformAdmin: (200, 200), .tenantAdmin: (200, 404), .tenantViewer: (403, 404)]),
        Endpoint(name: "rotate key", method: .post,
                 request: { h, t in ("/admin/v1/keys/\(try await h.newKey(t).id)/rotate", #"{"grace_seconds": 10}"#) },
                 expected: [.platformAdmin: (201, 201), .tenantAdmin: (201, 404), .tenantViewer: (403, 404)]),
        Endpoint(name: "revoke key", method: .post,
                 request: { h, t in ("/admin/v1/keys/\(try await h.newKey(t).id)/revoke", nil) },
                 expected: [.platformAdmin: (200, 200), .tenantAdmin: (200, 404), .tenantViewer: (403, 404)]),
        Endpoint(name: "usage", method: .get, request: { _, t in ("/admin/v1/tenants/\(t.id)/usage?group_by=day", nil) },
                 expected: [.platformAdmin: (200, 200), .tenantAdmin: (200, 404), .tenantViewer: (200, 404)]),
        Endpoint(name: "statement", method: .get, request: { _, t in ("/admin/v1/tenants/\(t.id)/statements/2026-11", nil) },
                 expected: [.platformAdmin: (200, 200), .tenantAdmin: (200, 404), .tenantViewer: (200, 404)]),
        Endpoint(name: "create webhook", method: .post,
                 request: { _, t in ("/admin/v1/tenants/\(t.id)/webhooks", #"{"url": "https://hooks.example.com/in", "events": ["key.created"]}"#) },
                 expected: [.platformAdmin: (201, 201), .tenantAdmin: (201, 404), .tenantViewer: (403, 404)]),
        Endpoint(name: "list webhooks", method: .get, request: { _, t in ("/admin/v1/tenants/\(t.id)/webhooks", nil) },
                 expected: [.platformAdmin: (200, 200), .tenantAdmin: (200, 404), .tenantViewer: (200, 404)]),
        Endpoint(name: "patch webhook", method: .patch,
                 request: { h, t in ("/admin/v1/webhooks/\(try await h.newWebhook(t))", #"{"enabled": false}"#) },
                 expected: [.platformAdmin: (200, 200), .tenantAdmin: (200, 404), .tenantViewer: (403, 404)]),
        Endpoint(name: "webhook deliveries", method: .get,
                 request: { h, t in ("/admin/v1/webhooks/\(try await h.newWebhook(t))/deliveries", nil) },
                 expected: [.platformAdmin: (200, 200), .tenantAdmin: (200, 404), .tenantViewer: (200, 404)]),
        Endpoint(name: "audit log", method: .get, request: { _, t in ("/admin/v1/tenants/\(t.id)/audit", nil) },
                 expected: [.platformAdmin: (200, 200), .tenantAdmin: (200, 404), .tenantViewer: (200, 404)]),
        Endpoint(name: "list prices", method: .get, request: { _, _ in ("/admin/v1/prices", nil) },
                 expected: [.platformAdmin: (200, nil), .tenantAdmin: (200, nil), .tenantViewer: (200, nil)]),
        Endpoint(name: "add price", method: .post,
                 request: { _, _ in ("/admin/v1/prices", #"{"model": "rbac-\#(UUID().uuidString.prefix(8))", "input_micro_usd_per_million": 1, "output_micro_usd_per_million": 2}"#) },
                 expected: [.platformAdmin: (201, nil), .tenantAdmin: (403, nil), .tenantViewer: (403, nil)]),
    ]

    @Test func everyEndpointRoleAndTenant() async throws {
        try await AdminHarness.run { harness in
            let own = try await harness.newTenant()
            let foreign = try await harness.newTenant()
            for endpoint in Self.endpoints {
                for role in AdminRole.allCases {
                    let token = try await harness.token(role, tenant: role == .platformAdmin ? nil : own.id)
                    let expectation = try #require(endpoint.expected[role])
                    for target in Target.allCases {
                        guard let wanted = target == .own ? expectation.own : expectation.foreign else { continue }
                        let (uri, body) = try await endpoint.request(harness, target == .own ? own : foreign)
                        let response = try await harness.call(endpoint.method, uri, token: token, json: body)
                        #expect(response.status.code == wanted,
                                "\(endpoint.name) as \(role.rawValue) on \(target.rawValue) tenant: \(response.status.code) \(response.text)")
                    }
                    // Without a token, or with a bad one: 401 whatever the role would be.
                    let (uri, body) = try await endpoint.request(harness, own)
                    #expect(try await harness.call(endpoint.method, uri, token: nil, json: body).status == .unauthorized)
                    #expect(try await harness.call(endpoint.method, uri, token: "x.y.z", json: body).status == .unauthorized)
                }
            }
        }
    }

    /// Price versions are added ahead of time and never twice for one moment; bad input is a 400
    /// naming the field.
    @Test func priceVersionsAreValidatedAndListed() async throws {
        try await AdminHarness.run { harness in
            let token = try await harness.token(.platformAdmin)
            let model = "price-test-\(UUID().uuidString.prefix(8))"
            let soon = ISO8601DateFormatter().string(from: Date().addingTimeInterval(3_600))
            let past = ISO8601DateFormatter().string(from: Date().addingTimeInterval(-60))
            let cases: [(String, String?)] = [
                (#"{"model": "\#(model)", "effective_from": "\#(past)", "input_micro_usd_per_million": 1, "output_micro_usd_per_million": 1}"#, "effective_from"),
                (#"{"model": "\#(model)", "input_micro_usd_per_million": 1.5, "output_micro_usd_per_million": 1}"#, "input_micro_usd_per_million"),
                (#"{"model": "\#(model)", "input_micro_usd_per_million": -1, "output_micro_usd_per_million": 1}"#, "input_micro_usd_per_million"),
                (#"{"model": "\#(model)", "input_micro_usd_per_million": 1}"#, "output_micro_usd_per_million"),
                (#"{"model": "bad|name", "input_micro_usd_per_million": 1, "output_micro_usd_per_million": 1}"#, "model"),
                (#"{"model": "\#(model)", "input_micro_usd_per_million": 1, "output_micro_usd_per_million": 1, "discount": 5}"#, "discount"),
            ]
            for (body, param) in cases {
                let response = try await harness.call(.post, "/admin/v1/prices", token: token, json: body)
                #expect(response.status.code == 400 && response.errorParam == param, "\(body): \(response.text)")
            }
            let body = #"{"model": "\#(model)", "effective_from": "\#(soon)", "input_micro_usd_per_million": 150000, "output_micro_usd_per_million": 600000}"#
            let created = try await harness.call(.post, "/admin/v1/prices", token: token, json: body)
            #expect(created.status.code == 201)
            #expect(created.json["cached_input_micro_usd_per_million"] as? Int == 150_000)
            #expect(created.json["output_usd_per_million"] as? String == "0.600000")
            #expect(try await harness.call(.post, "/admin/v1/prices", token: token, json: body).status.code == 409)
            let listed = try await harness.call(.get, "/admin/v1/prices?model=\(model)", token: token)
            let data = listed.json["data"] as? [[String: Any]] ?? []
            #expect(data.count == 1 && data.first?["id"] as? Int == created.json["id"] as? Int)
        }
    }

    @Test func badTokensAreRefused() async throws {
        try await AdminHarness.run { harness in
            let tenant = try await harness.newTenant()
            let uri = "/admin/v1/tenants/\(tenant.id)"
            let expired = try await harness.token(.platformAdmin, expires: Date().addingTimeInterval(-5))
            let otherSecret = try await AdminAuthenticator(hmacSecret: String(repeating: "z", count: 40))
                .token(AdminClaims(sub: "x", role: .platformAdmin, tenant: nil, expires: Date().addingTimeInterval(60)))
            let tenantRoleWithoutTenant = try await harness.authenticator
                .token(AdminClaims(sub: "x", role: .tenantAdmin, tenant: nil, expires: Date().addingTimeInterval(60)))
            // alg "none" with platform claims.
            let unsigned = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ4Iiwicm9sZSI6InBsYXRmb3JtX2FkbWluIiwiZXhwIjo0MTAyNDQ0ODAwfQ."
            for token in [expired, otherSecret, tenantRoleWithoutTenant, unsigned, "", "Bearer"] {
                let response = try await harness.call(.get, uri, token: token)
                #expect(response.status == .unauthorized)
                #expect((response.json["error"] as? [String: Any])?["code"] as? String == "invalid_token")
            }
        }
    }
}

@Suite("Admin tokens from an external identity provider")
struct AdminExternalKeyTests {
    @Test func es256TokensVerifyWithTheConfiguredPublicKeyOnly() async throws {
        let signingKey = ES256PrivateKey()
        let provider = JWTKeyCollection()
        await provider.add(ecdsa: signingKey)
        let claims = AdminClaims(sub: "idp-user", role: .platformAdmin, tenant: nil, expires: Date().addingTimeInterval(60))
        let token = try await provider.sign(claims)

        let trusting = try await AdminAuthenticator(hmacSecret: nil, ecdsaPublicKeysPEM: [signingKey.publicKey.pemRepresentation])
        let caller = await trusting.caller(bearer: token)
        #expect(caller?.subject == "idp-user" && caller?.role == .platformAdmin && caller?.tenant == nil)
        let other = try await AdminAuthenticator(hmacSecret: nil, ecdsaPublicKeysPEM: [ES256PrivateKey().publicKey.pemRepresentation])
        #expect(await other.caller(bearer: token) == nil)
        let hmacOnly = try await AdminAuthenticator(hmacSecret: String(repeating: "s", count: 32))
        #expect(await hmacOnly.caller(bearer: token) == nil)
    }

    @Test func shortSecretsAreRefusedAtStartUp() async {
        await #expect(throws: AdminAuthConfigurationError.self) { _ = try await AdminAuthenticator(hmacSecret: "short") }
    }
}

import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import PostgresNIO
import SluiceAdminAPI
import SluiceTenancy
import SluiceTestSupport
import Testing

@Suite("Admin API input validation")
struct AdminInputTests {
    static let badTenantBodies: [(body: String, param: String)] = [
        (#"{"name": "ok", "extra": 1}"#, "extra"),
        (#"{"name": 5}"#, "name"),
        (#"{}"#, "name"),
        (#"{"name": null}"#, "name"),
        (#"{"name": "ok", "limits": {"requests_per_minute": -1}}"#, "limits.requests_per_minute"),
        (#"{"name": "ok", "limits": {"requests_per_minute": 0}}"#, "limits.requests_per_minute"),
        (#"{"name": "ok", "limits": {"requests_per_minute": 1e12}}"#, "limits.requests_per_minute"),
        (#"{"name": "ok", "limits": {"requests_per_minute": 1.5}}"#, "limits.requests_per_minute"),
        (#"{"name": "ok", "limits": {"requests_per_minute": "10"}}"#, "limits.requests_per_minute"),
        (#"{"name": "ok", "limits": {"tokens_per_minute": true}}"#, "limits.tokens_per_minute"),
        (#"{"name": "ok", "limits": {"monthly_budget_usd": -0.01}}"#, "limits.monthly_budget_usd"),
        (#"{"name": "ok", "limits": {"rpm": 10}}"#, "limits.rpm"),
        (#"{"name": "ok", "limits": []}"#, "limits"),
        (#"{"name": "x'); DROP TABLE tenants;--"}"#, "name"),
        (#"{"name": "Robert\"; DELETE FROM api_keys"}"#, "name"),
        (#"{"name": " padded "}"#, "name"),
        (#"{"name": "tab\there"}"#, "name"),
        ("{\"name\": \"\(String(repeating: "a", count: 10_000))\"}", "name"),
        (#"{"name": "ok", "model_limits": {"bad model!": {}}}"#, "model_limits.bad model!"),
        (#"{"name": "ok", "model_limits": {"m": {"burst_tokens": -3}}}"#, "model_limits.m.burst_tokens"),
        (#"{"name": "#, "body"),
        ("[1, 2]", "body"),
        ("null", "body"),
        ("\"just a string\"", "body"),
        ("", "body"),
    ]

    @Test func badTenantBodiesAreRefusedByFieldAndStoreNothing() async throws {
        try await AdminHarness.run { harness in
            let token = try await harness.token(.platformAdmin)
            for (body, param) in Self.badTenantBodies {
                let response = try await harness.call(.post, "/admin/v1/tenants", token: token, json: body)
                #expect(response.status == .badRequest, "\(body.prefix(60)): \(response.status.code)")
                #expect(response.errorParam == param, "\(body.prefix(60)): param \(response.errorParam ?? "nil")")
                let error = try #require(response.json["error"] as? [String: Any])
                #expect(error["type"] as? String == "invalid_request_error")
                #expect(!(error["message"] as? String ?? "").isEmpty)
            }
            let huge = "{\"name\": \"ok\", \"limits\": {}, \"model_limits\": {\"\(String(repeating: "m", count: 70_000))\": {}}}"
            #expect(try await harness.call(.post, "/admin/v1/tenants", token: token, json: huge).status == .contentTooLarge)
            #expect(try await auditRows(harness.subject) == 0, "a refused request stored something")
        }
    }

    @Test func badKeyRotateAndQueryInputs() async throws {
        try await AdminHarness.run { harness in
            let tenant = try await harness.newTenant()
            let key = try await harness.newKey(tenant)
            let token = try await harness.token(.tenantAdmin, tenant: tenant.id)
            let keys = "/admin/v1/tenants/\(tenant.id)/keys"
            let cases: [(HTTPRequest.Method, String, String?, String)] = [
                (.post, keys, #"{"name": "k", "models": "all"}"#, "models"),
                (.post, keys, #"{"name": "k", "models": [1]}"#, "models[0]"),
                (.post, keys, #"{"name": "k", "models": ["ok", "not ok"]}"#, "models[1]"),
                (.post, keys, #"{"name": "k", "expires_at": "yesterday"}"#, "expires_at"),
                (.post, keys, #"{"name": "k", "expires_at": "2001-01-01T00:00:00Z"}"#, "expires_at"),
                (.post, keys, #"{"name": "k", "secret": "mine"}"#, "secret"),
                (.post, keys, #"{"name": "k", "scope": {"endpoints": ["/v1/files"]}}"#, "scope.endpoints[0]"),
                (.post, keys, #"{"name": "k", "scope": {"endpoints": []}}"#, "scope.endpoints"),
                (.post, keys, #"{"name": "k", "scope": {"networks": ["10.0.0.1/8"]}}"#, "scope.networks[0]"),
                (.post, keys, #"{"name": "k", "scope": {"networks": ["10.0.0.0/33"]}}"#, "scope.networks[0]"),
                (.post, keys, #"{"name": "k", "scope": {"networks": ["example.com"]}}"#, "scope.networks[0]"),
                (.post, keys, #"{"name": "k", "scope": {"max_output_tokens": 0}}"#, "scope.max_output_tokens"),
                (.post, keys, #"{"name": "k", "scope": {"ips": ["10.0.0.0/8"]}}"#, "scope.ips"),
                (.patch, "/admin/v1/keys/\(key.id)", #"{}"#, "body"),
                (.patch, "/admin/v1/keys/\(key.id)", #"{"secret_hash": "00"}"#, "secret_hash"),
                (.patch, "/admin/v1/keys/\(key.id)", #"{"tenant_id": "\#(UUID())"}"#, "tenant_id"),
                (.patch, "/admin/v1/keys/\(key.id)", #"{"revoked_at": null}"#, "revoked_at"),
                (.patch, "/admin/v1/keys/\(key.id)", #"{"expires_at": "2001-01-01T00:00:00Z"}"#, "expires_at"),
                (.patch, "/admin/v1/keys/\(key.id)", #"{"scope": {"networks": ["::1/129"]}}"#, "scope.networks[0]"),
                (.post, "/admin/v1/keys/\(key.id)/rotate", #"{"grace_seconds": -5}"#, "grace_seconds"),
                (.post, "/admin/v1/keys/\(key.id)/rotate", #"{"grace_seconds": "soon"}"#, "grace_seconds"),
                (.post, "/admin/v1/keys/\(key.id)/rotate", #"{"grace_seconds": 99999999}"#, "grace_seconds"),
                (.get, "/admin/v1/tenants/\(tenant.id)/usage?group_by=tenant", nil, "group_by"),
                (.get, "/admin/v1/tenants/\(tenant.id)/usage?from=garbage", nil, "from"),
                (.get, "/admin/v1/tenants/\(tenant.id)/usage?from=2026-02-01&to=2026-01-01", nil, "from"),
                (.get, "\(keys)?limit=0", nil, "limit"),
                (.get, "\(keys)?limit=abc", nil, "limit"),
            ]
            for (method, uri, body, param) in cases {
                let response = try await harness.call(method, uri, token: token, json: body)
                #expect(response.status == .badRequest, "\(uri) \(body ?? ""): \(response.status.code) \(response.text)")
                #expect(response.errorParam == param, "\(uri) \(body ?? ""): param \(response.errorParam ?? "nil")")
            }
            // Unknown or malformed ids are 404, not 400 or 500.
            for uri in ["/admin/v1/tenants/not-a-uuid", "/admin/v1/tenants/\(UUID())", "/admin/v1/keys/short/revoke",
                        "/admin/v1/keys/ABCDEFGHIJKL/revoke"] {
                let method: HTTPRequest.Method = uri.hasSuffix("revoke") ? .post : .get
                let platform = try await harness.token(.platformAdmin)
                #expect(try await harness.call(method, uri, token: platform).status == .notFound, "\(uri)")
            }
            #expect(try await auditRows(harness.subject) == 0)
        }
    }

    /// A patch changes what it names and keeps the rest; scope parts given as null are lifted;
    /// every change is in the audit log; a rotated key keeps its scope.
    @Test func keysArePatchedPartByPart() async throws {
        try await AdminHarness.run { harness in
            let tenant = try await harness.newTenant()
            let token = try await harness.token(.tenantAdmin, tenant: tenant.id)
            let created = try await harness.call(.post, "/admin/v1/tenants/\(tenant.id)/keys", token: token, json: """
                {"name": "scoped", "models": ["m1"], "scope": {"endpoints": ["/v1/embeddings"], "networks": ["10.0.0.0/8", "2001:db8::/32"]}}
                """)
            #expect(created.status == .created, "\(created.text)")
            let id = try #require(created.json["id"] as? String)
            let uri = "/admin/v1/keys/\(id)"
            func scope(_ response: TestResponse) -> [String: Any] { response.json["scope"] as? [String: Any] ?? [:] }
            #expect(scope(created)["endpoints"] as? [String] == ["/v1/embeddings"])

            var patched = try await harness.call(.patch, uri, token: token, json: #"{"scope": {"max_output_tokens": 256}}"#)
            #expect(patched.status == .ok, "\(patched.text)")
            #expect(scope(patched)["max_output_tokens"] as? Int == 256)
            #expect(scope(patched)["networks"] as? [String] == ["10.0.0.0/8", "2001:db8::/32"], "kept")
            #expect(patched.json["models"] as? [String] == ["m1"] && patched.json["name"] as? String == "scoped")

            patched = try await harness.call(.patch, uri, token: token, json: #"{"name": "renamed", "models": null, "scope": {"endpoints": null}}"#)
            #expect(patched.status == .ok, "\(patched.text)")
            #expect(patched.json["name"] as? String == "renamed" && patched.json["models"] as? [String] == nil, "every model")
            #expect(scope(patched)["endpoints"] == nil && scope(patched)["max_output_tokens"] as? Int == 256)

            let rotated = try await harness.call(.post, "\(uri)/rotate", token: token, json: nil)
            #expect(scope(rotated)["max_output_tokens"] as? Int == 256, "a replacement keeps the scope")

            patched = try await harness.call(.patch, uri, token: token, json: #"{"scope": null}"#)
            #expect(patched.status == .ok && scope(patched).isEmpty, "\(patched.text)")

            let audit = try await harness.call(.get, "/admin/v1/tenants/\(tenant.id)/audit", token: token)
            let updates = (audit.json["data"] as? [[String: Any]] ?? []).filter { $0["action"] as? String == "key.update" }
            #expect(updates.count == 3)
        }
    }

    @Test func createdKeysAreShownOnceAndNeverListed() async throws {
        try await AdminHarness.run { harness in
            let tenant = try await harness.newTenant()
            let token = try await harness.token(.tenantAdmin, tenant: tenant.id)
            let created = try await harness.call(.post, "/admin/v1/tenants/\(tenant.id)/keys", token: token,
                                                 json: #"{"name": "prod", "models": ["llama-3-8b"], "limits": {"requests_per_minute": 60}}"#)
            #expect(created.status == .created)
            let plaintext = try #require(created.json["key"] as? String)
            let parsed = try #require(APIKey(parsing: plaintext))
            #expect(created.json["id"] as? String == parsed.keyID)

            let listed = try await harness.call(.get, "/admin/v1/tenants/\(tenant.id)/keys", token: token)
            #expect(listed.status == .ok)
            #expect(!listed.text.contains(parsed.secret))
            let rows = try #require(listed.json["data"] as? [[String: Any]])
            #expect(rows.count == 1 && rows[0]["key"] == nil && rows[0]["secret_hash"] == nil)

            let rotated = try await harness.call(.post, "/admin/v1/keys/\(parsed.keyID)/rotate", token: token, json: nil)
            #expect(rotated.status == .created)
            let revoked = try await harness.call(.post, "/admin/v1/keys/\(parsed.keyID)/revoke", token: token)
            #expect(revoked.status == .ok && !revoked.text.contains(parsed.secret) && revoked.json["revoked_at"] is String)
            #expect(try await auditRows(harness.subject) == 3)  // create, rotate, revoke, each by this caller
        }
    }

    @Test func listsArePaginated() async throws {
        try await AdminHarness.run { harness in
            let tenant = try await harness.newTenant()
            for _ in 0..<5 { _ = try await harness.newKey(tenant) }
            let token = try await harness.token(.tenantViewer, tenant: tenant.id)
            var seen: [String] = []
            var after: String?
            repeat {
                let uri = "/admin/v1/tenants/\(tenant.id)/keys?limit=2" + (after.map { "&after=\($0)" } ?? "")
                let page = try await harness.call(.get, uri, token: token)
                seen += (page.json["data"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String }
                after = page.json["next_after"] as? String
                #expect((page.json["has_more"] as? Bool) == (after != nil))
            } while after != nil
            #expect(seen.count == 5 && Set(seen).count == 5 && seen == seen.sorted())
        }
    }

    private func auditRows(_ actor: String) async throws -> Int {
        try await PostgresFixture.withClient { client, _ in
            let rows = try await client.query("SELECT count(*)::bigint FROM audit_log WHERE actor = \(actor)", logger: Logger(label: "t"))
            for try await count in rows.decode(Int64.self) { return Int(count) }
            return -1
        }
    }
}

@Suite("Admin API OpenAPI document")
struct AdminOpenAPITests {
    static let docPath = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("docs/admin-api.openapi.yaml")

    @Test func servedDocumentIsTheOneInDocsAndListsExactlyTheRoutes() async throws {
        let file = try String(contentsOf: Self.docPath, encoding: .utf8)
        try await AdminHarness.run { harness in
            let served = try await harness.call(.get, "/admin/v1/openapi.yaml", token: nil)
            #expect(served.status == .ok)
            #expect(served.text + "\n" == file, "docs/admin-api.openapi.yaml differs from the embedded copy: run scripts/embed.sh")
        }
        // Paths are two-space-indented keys under `paths:`, methods four-space-indented under them.
        var documented = Set<String>()
        var path: String?
        var inPaths = false
        for line in file.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("paths:") { inPaths = true; continue }
            if inPaths, let first = line.first, first != " " { inPaths = false }
            guard inPaths else { continue }
            if line.hasPrefix("  /"), line.hasSuffix(":") { path = String(line.dropFirst(2).dropLast()); continue }
            for method in ["get", "post", "patch", "put", "delete"] where line == "    \(method):" {
                documented.insert("\(method) \(path ?? "?")")
            }
        }
        let implemented = Set(AdminAPI.routes.map { "\($0.method) \($0.path)" })
        #expect(documented == implemented)
    }
}

import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import Logging
import PostgresNIO
import SluiceAdminAPI
import SluiceBilling
import SluiceWebhooks
import SluiceLimiter
import SluiceRedis
import SluiceTenancy
import SluiceTestSupport

/// The admin API on Hummingbird's router test client, over the stack's PostgreSQL and Redis.
struct AdminHarness: Sendable {
    static let secret = "test-admin-secret-0123456789abcdef"
    let store: TenantStore
    let postgres: PostgresClient
    let authenticator: AdminAuthenticator
    let client: any TestClientProtocol
    /// A per-test `sub`, so the audit log tells this test's writes apart.
    let subject = "test-\(UUID().uuidString.prefix(8))"

    static func run(oidc: OIDCVerifier? = nil, _ body: @escaping @Sendable (AdminHarness) async throws -> Void) async throws {
        try await PostgresFixture.withClient { postgresClient, store in
            let client = postgresClient
            let authenticator = try await AdminAuthenticator(hmacSecret: secret, oidc: oidc)
            let redis = try RedisClient(configuration: RedisConfiguration.patient(url: TestEnvironment.redisURL))
            let api = AdminAPI(store: store, hasher: KeyHasher(pepper: "test-pepper"), authenticator: authenticator, redis: redis,
                               prices: PriceStore(client: client, logger: Logger(label: "admin-test")),
                               statements: StatementStore(client: client, logger: Logger(label: "admin-test")),
                               webhooks: AdminWebhookSettings(store: WebhookStore(client: client, logger: Logger(label: "admin-test")),
                                                              sealer: WebhookSecretSealer(pepper: "test-pepper"),
                                                              allowPrivateNetworks: false))
            let router = Router(context: AdminRequestContext.self)
            api.addRoutes(to: router)
            try await Application(router: router).test(.router) { client in
                try await body(AdminHarness(store: store, postgres: postgresClient, authenticator: authenticator, client: client))
            }
            redis.shutdown()
        }
    }

    func token(_ role: AdminRole, tenant: UUID? = nil, expires: Date = Date().addingTimeInterval(600)) async throws -> String {
        try await authenticator.token(AdminClaims(sub: subject, role: role, tenant: tenant?.uuidString.lowercased(), expires: expires))
    }

    @discardableResult
    func call(_ method: HTTPRequest.Method, _ uri: String, token: String?, json: String? = nil,
              headers extra: HTTPFields = [:]) async throws -> TestResponse {
        var headers = extra
        if let token { headers[.authorization] = "Bearer \(token)" }
        if json != nil { headers[.contentType] = "application/json" }
        return try await client.execute(uri: uri, method: method, headers: headers, body: json.map { ByteBuffer(string: $0) })
    }

    func newTenant() async throws -> Tenant {
        try await store.createTenant(name: "t \(UUID().uuidString.prefix(8))", limits: .init(), modelLimits: [:], actor: "setup")
    }

    /// A webhook endpoint of the tenant; its id.
    func newWebhook(_ tenant: Tenant) async throws -> String {
        let sealed = try WebhookSecretSealer(pepper: "test-pepper").seal(WebhookSigning.newSecret())
        return try await WebhookStore(client: postgres, logger: Logger(label: "admin-test"))
            .create(tenantID: tenant.id, url: "https://hooks.example.com/x", events: [], sealedSecret: sealed, actor: "setup")
            .id.uuidString.lowercased()
    }

    func newKey(_ tenant: Tenant) async throws -> KeyRecord {
        try await store.createKey(tenantID: tenant.id, name: "k", limits: .init(), models: nil, expiresAt: nil,
                                  hasher: KeyHasher(pepper: "test-pepper"), actor: "setup").0
    }
}

extension TestResponse {
    var json: [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(body.readableBytesView))) as? [String: Any] ?? [:]
    }

    var errorParam: String? { (json["error"] as? [String: Any])?["param"] as? String }
    var text: String { String(buffer: body) }
}

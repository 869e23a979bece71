import Logging
import PostgresNIO
import SluiceTenancy

/// A PostgresNIO client on the development stack's database, migrated, running for the
/// duration of `body`.
public enum PostgresFixture {
    public static func withClient<T: Sendable>(_ body: @Sendable (PostgresClient, TenantStore) async throws -> T) async throws -> T {
        var logger = Logger(label: "sluice.test.postgres")
        logger.logLevel = .error
        let client = PostgresClient(configuration: try DatabaseURL.configuration(TestEnvironment.databaseURL),
                                    backgroundLogger: logger)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            try await Migrator(client: client, logger: logger).migrate()
            return try await body(client, TenantStore(client: client, logger: logger))
        }
    }
}

import Logging
import PostgresNIO

extension PostgresClient {
    /// Runs `body` on one connection while holding the session advisory lock `key`, if no other
    /// session holds it; returns false (and runs nothing) when one does. For periodic work that
    /// one replica of the fleet should do at a time.
    public func ifAdvisoryLockFree(_ key: Int64, logger: Logger,
                                   _ body: (PostgresConnection) async throws -> Void) async throws -> Bool {
        try await withConnection { connection in
            var locked = false
            for try await got in try await connection.query("SELECT pg_try_advisory_lock(\(key))", logger: logger).decode(Bool.self) {
                locked = got
            }
            guard locked else { return false }
            do {
                try await body(connection)
            } catch {
                _ = try? await connection.query("SELECT pg_advisory_unlock(\(key))", logger: logger)
                throw error
            }
            _ = try await connection.query("SELECT pg_advisory_unlock(\(key))", logger: logger)
            return true
        }
    }
}

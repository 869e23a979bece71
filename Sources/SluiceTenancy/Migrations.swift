import Logging
import PostgresNIO

/// Forward-only schema migrations. Never edit a released migration: add the next one.
enum Migrations {
    struct Migration: Sendable {
        let version: Int
        let name: String
        let statements: [PostgresQuery]
    }

    static let all: [Migration] = [
        Migration(version: 1, name: "tenants, keys, prices, audit, usage", statements: [
            """
            CREATE TABLE tenants (
                id uuid PRIMARY KEY,
                name text NOT NULL,
                limits jsonb NOT NULL DEFAULT '{}',
                model_limits jsonb NOT NULL DEFAULT '{}',
                created_at timestamptz NOT NULL DEFAULT now(),
                updated_at timestamptz NOT NULL DEFAULT now()
            )
            """,
            """
            CREATE TABLE api_keys (
                id text PRIMARY KEY,
                tenant_id uuid NOT NULL REFERENCES tenants(id),
                name text NOT NULL,
                secret_hash bytea NOT NULL,
                limits jsonb NOT NULL DEFAULT '{}',
                models text[],
                created_at timestamptz NOT NULL DEFAULT now(),
                expires_at timestamptz,
                revoked_at timestamptz,
                replaced_by text REFERENCES api_keys(id)
            )
            """,
            "CREATE INDEX api_keys_tenant ON api_keys (tenant_id, id)",
            """
            CREATE TABLE model_prices (
                model text NOT NULL,
                effective_from timestamptz NOT NULL,
                input_usd_per_million numeric(12, 6) NOT NULL CHECK (input_usd_per_million >= 0),
                output_usd_per_million numeric(12, 6) NOT NULL CHECK (output_usd_per_million >= 0),
                PRIMARY KEY (model, effective_from)
            )
            """,
            """
            CREATE TABLE audit_log (
                id bigserial PRIMARY KEY,
                at timestamptz NOT NULL DEFAULT now(),
                actor text NOT NULL,
                tenant_id uuid,
                action text NOT NULL,
                target text NOT NULL,
                details jsonb NOT NULL DEFAULT '{}'
            )
            """,
            "CREATE INDEX audit_log_tenant ON audit_log (tenant_id, at)",
            """
            CREATE TABLE usage_ledger (
                request_id text PRIMARY KEY,
                tenant_id uuid NOT NULL,
                key_id text NOT NULL,
                model text NOT NULL,
                prompt_tokens integer NOT NULL,
                completion_tokens integer NOT NULL,
                cost_micro_usd bigint NOT NULL,
                at timestamptz NOT NULL
            )
            """,
            "CREATE INDEX usage_ledger_tenant ON usage_ledger (tenant_id, at)",
        ]),
        // Request ids are the server's and unique per tenant; the client's id is kept for
        // correlation only. Existing rows stay as they are (a unique request_id is unique per tenant).
        Migration(version: 2, name: "ledger keyed by tenant and server request id; usage source; dead letters", statements: [
            "ALTER TABLE usage_ledger DROP CONSTRAINT usage_ledger_pkey",
            "ALTER TABLE usage_ledger ADD PRIMARY KEY (tenant_id, request_id)",
            "ALTER TABLE usage_ledger ADD COLUMN client_request_id text",
            "ALTER TABLE usage_ledger ADD COLUMN usage_source text NOT NULL DEFAULT 'backend' CHECK (usage_source IN ('backend', 'estimated'))",
            "ALTER TABLE usage_ledger ADD COLUMN usage_clamped boolean NOT NULL DEFAULT false",
            """
            CREATE TABLE usage_dead_letter (
                id bigserial PRIMARY KEY,
                at timestamptz NOT NULL DEFAULT now(),
                tenant_id text,
                request_id text,
                reason text NOT NULL,
                payload text NOT NULL
            )
            """,
        ]),
    ]
}

/// Applies pending migrations. Safe to run concurrently from several replicas (one advisory
/// lock serialises them) and any number of times (applied versions are recorded).
public struct Migrator: Sendable {
    /// An arbitrary constant: the advisory lock id that all Sluice migrators share.
    static let lockID: Int64 = 0x51_1C_E0_01

    let client: PostgresClient
    let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// Returns the versions applied by this call (empty when the schema was current).
    @discardableResult
    public func migrate(upTo last: Int = .max) async throws -> [Int] {
        try await client.withConnection { connection in
            _ = try await connection.query("SELECT pg_advisory_lock(\(Self.lockID))", logger: logger)
            do {
                let applied = try await applyPending(on: connection, upTo: last)
                _ = try await connection.query("SELECT pg_advisory_unlock(\(Self.lockID))", logger: logger)
                return applied
            } catch {
                _ = try? await connection.query("SELECT pg_advisory_unlock(\(Self.lockID))", logger: logger)
                throw error
            }
        }
    }

    private func applyPending(on connection: PostgresConnection, upTo last: Int) async throws -> [Int] {
        _ = try await connection.query("""
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())
            """, logger: logger)
        var done = Set<Int>()
        for try await version in try await connection.query("SELECT version FROM schema_migrations", logger: logger)
            .decode(Int.self) {
            done.insert(version)
        }
        var applied: [Int] = []
        for migration in Migrations.all where !done.contains(migration.version) && migration.version <= last {
            try await connection.withTransaction(logger: logger) { transaction in
                for statement in migration.statements {
                    _ = try await transaction.query(statement, logger: logger)
                }
                _ = try await transaction.query(
                    "INSERT INTO schema_migrations (version, name) VALUES (\(migration.version), \(migration.name))",
                    logger: logger)
            }
            logger.info("applied migration", metadata: ["version": "\(migration.version)", "name": "\(migration.name)"])
            applied.append(migration.version)
        }
        return applied
    }
}

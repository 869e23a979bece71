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
        // Monthly partitions, so one PostgreSQL keeps up and old months are dropped whole. A
        // partitioned table's unique keys must include the partition key (`at`), and one request
        // can reach the ledger with two times (its settle, or the direct write when Redis failed),
        // so exactly-once moves to `usage_request_ids` (one row per request, not partitioned):
        // a ledger row is written only for an id that table did not have yet.
        Migration(version: 3, name: "ledger partitioned by month; request ids apart for exactly-once", statements: [
            "ALTER TABLE usage_ledger RENAME TO usage_ledger_v2",
            "ALTER INDEX usage_ledger_tenant RENAME TO usage_ledger_v2_tenant",
            """
            CREATE TABLE usage_ledger (
                request_id text NOT NULL,
                tenant_id uuid NOT NULL,
                key_id text NOT NULL,
                model text NOT NULL,
                prompt_tokens integer NOT NULL,
                completion_tokens integer NOT NULL,
                cost_micro_usd bigint NOT NULL,
                at timestamptz NOT NULL,
                client_request_id text,
                usage_source text NOT NULL DEFAULT 'backend' CHECK (usage_source IN ('backend', 'estimated')),
                usage_clamped boolean NOT NULL DEFAULT false
            ) PARTITION BY RANGE (at)
            """,
            // Rows of a month with no partition yet land here rather than fail.
            "CREATE TABLE usage_ledger_default PARTITION OF usage_ledger DEFAULT",
            "CREATE INDEX usage_ledger_tenant ON usage_ledger (tenant_id, at)",
            """
            CREATE TABLE usage_request_ids (
                tenant_id uuid NOT NULL,
                request_id text NOT NULL,
                at timestamptz NOT NULL,
                PRIMARY KEY (tenant_id, request_id)
            )
            """,
            "CREATE INDEX usage_request_ids_at ON usage_request_ids (at)",
            // Creates the monthly partitions from `first` to `last` (UTC months) that do not exist.
            // Serialised by an advisory lock: replicas run it concurrently.
            """
            CREATE FUNCTION sluice_ledger_partitions(first timestamptz, last timestamptz) RETURNS integer
            LANGUAGE plpgsql AS $$
            DECLARE
                month timestamptz := date_trunc('month', first AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
                made integer := 0;
                name text;
            BEGIN
                PERFORM pg_advisory_xact_lock(1397508419);
                WHILE month <= last LOOP
                    name := 'usage_ledger_' || to_char(month AT TIME ZONE 'UTC', 'YYYY_MM');
                    IF to_regclass(name) IS NULL THEN
                        EXECUTE format('CREATE TABLE %I PARTITION OF usage_ledger FOR VALUES FROM (%L) TO (%L)',
                                       name, month, month + interval '1 month');
                        made := made + 1;
                    END IF;
                    month := month + interval '1 month';
                END LOOP;
                RETURN made;
            END $$
            """,
            """
            SELECT sluice_ledger_partitions(coalesce((SELECT min(at) FROM usage_ledger_v2), now()), now() + interval '2 months')
            """,
            """
            INSERT INTO usage_request_ids (tenant_id, request_id, at)
            SELECT tenant_id, request_id, at FROM usage_ledger_v2
            """,
            """
            INSERT INTO usage_ledger (request_id, tenant_id, key_id, model, prompt_tokens, completion_tokens, cost_micro_usd,
                                      at, client_request_id, usage_source, usage_clamped)
            SELECT request_id, tenant_id, key_id, model, prompt_tokens, completion_tokens, cost_micro_usd,
                   at, client_request_id, usage_source, usage_clamped
            FROM usage_ledger_v2
            """,
            "DROP TABLE usage_ledger_v2",
        ]),
        // Money in whole micro-USD: prices per million tokens become integers (input, cached input,
        // output), each version with an id that ledger rows name. Budgets need spend sums per tenant
        // and period (the existing (tenant_id, at) index serves them).
        Migration(version: 4, name: "price versions in micro-USD; ledger rows name their price and cached tokens", statements: [
            "ALTER TABLE model_prices DROP CONSTRAINT model_prices_pkey",
            "ALTER TABLE model_prices ADD COLUMN id bigserial PRIMARY KEY",
            "ALTER TABLE model_prices ADD UNIQUE (model, effective_from)",
            "ALTER TABLE model_prices ADD COLUMN input_micro_usd_per_million bigint",
            "ALTER TABLE model_prices ADD COLUMN cached_input_micro_usd_per_million bigint",
            "ALTER TABLE model_prices ADD COLUMN output_micro_usd_per_million bigint",
            """
            UPDATE model_prices SET input_micro_usd_per_million = round(input_usd_per_million * 1000000),
                                    cached_input_micro_usd_per_million = round(input_usd_per_million * 1000000),
                                    output_micro_usd_per_million = round(output_usd_per_million * 1000000)
            """,
            """
            ALTER TABLE model_prices
                ALTER COLUMN input_micro_usd_per_million SET NOT NULL,
                ALTER COLUMN cached_input_micro_usd_per_million SET NOT NULL,
                ALTER COLUMN output_micro_usd_per_million SET NOT NULL,
                ADD CHECK (input_micro_usd_per_million >= 0 AND cached_input_micro_usd_per_million >= 0
                           AND output_micro_usd_per_million >= 0),
                DROP COLUMN input_usd_per_million,
                DROP COLUMN output_usd_per_million,
                ADD COLUMN created_at timestamptz NOT NULL DEFAULT now(),
                ADD COLUMN created_by text NOT NULL DEFAULT 'migration'
            """,
            "ALTER TABLE usage_ledger ADD COLUMN price_id bigint",
            "ALTER TABLE usage_ledger ADD COLUMN cached_prompt_tokens integer NOT NULL DEFAULT 0",
        ]),
        // Exports to billing systems read the ledger by the time rows were recorded (rows can reach
        // it late), keep a cursor per exporter, and keep what a billing system refused for good.
        Migration(version: 5, name: "billing exports: recorded_at, cursors, refusals; tenants' Stripe customer", statements: [
            "ALTER TABLE tenants ADD COLUMN stripe_customer_id text",
            "ALTER TABLE usage_ledger ADD COLUMN recorded_at timestamptz NOT NULL DEFAULT now()",
            "CREATE INDEX usage_ledger_recorded ON usage_ledger (recorded_at)",
            """
            CREATE TABLE billing_export_cursors (
                exporter text PRIMARY KEY,
                exported_until timestamptz NOT NULL,
                pending_until timestamptz
            )
            """,
            """
            CREATE TABLE billing_export_failures (
                id bigserial PRIMARY KEY,
                at timestamptz NOT NULL DEFAULT now(),
                exporter text NOT NULL,
                event_id text NOT NULL,
                tenant_id uuid NOT NULL,
                status integer NOT NULL,
                reason text NOT NULL
            )
            """,
        ]),
        // Webhooks (Standard Webhooks): endpoints per tenant (secrets sealed with a key derived from
        // the pepper), an outbox of events written with the change that causes them, a delivery
        // per event and endpoint, and every attempt.
        Migration(version: 6, name: "webhooks: endpoints, outbox, deliveries, attempts", statements: [
            """
            CREATE TABLE webhook_endpoints (
                id uuid PRIMARY KEY,
                tenant_id uuid NOT NULL REFERENCES tenants(id),
                url text NOT NULL,
                events text[] NOT NULL DEFAULT '{}',
                secret_sealed bytea NOT NULL,
                enabled boolean NOT NULL DEFAULT true,
                created_at timestamptz NOT NULL DEFAULT now(),
                disabled_at timestamptz,
                disabled_reason text
            )
            """,
            "CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id)",
            """
            CREATE TABLE webhook_events (
                id text PRIMARY KEY,
                tenant_id uuid NOT NULL,
                type text NOT NULL,
                payload jsonb NOT NULL,
                dedupe_key text UNIQUE,
                created_at timestamptz NOT NULL DEFAULT now()
            )
            """,
            """
            CREATE TABLE webhook_deliveries (
                id bigserial PRIMARY KEY,
                event_id text NOT NULL REFERENCES webhook_events(id),
                endpoint_id uuid NOT NULL REFERENCES webhook_endpoints(id),
                status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
                attempts integer NOT NULL DEFAULT 0,
                next_attempt_at timestamptz,
                first_attempt_at timestamptz,
                last_attempt_at timestamptz,
                last_status integer,
                last_error text,
                delivered_at timestamptz,
                UNIQUE (event_id, endpoint_id)
            )
            """,
            "CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending'",
            "CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id)",
            """
            CREATE TABLE webhook_attempts (
                id bigserial PRIMARY KEY,
                delivery_id bigint NOT NULL REFERENCES webhook_deliveries(id),
                at timestamptz NOT NULL DEFAULT now(),
                status integer,
                error text,
                duration_ms integer NOT NULL
            )
            """,
            "CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, id)",
            // Periodic work done once for the fleet (e.g. one day's usage.daily events).
            "CREATE TABLE webhook_marks (name text PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())",
        ]),
        Migration(version: 7, name: "scoped keys: endpoints, source networks, output cap", statements: [
            // {"endpoints": [...], "networks": [...], "max_output_tokens": n}; each part optional.
            "ALTER TABLE api_keys ADD COLUMN scope jsonb NOT NULL DEFAULT '{}'",
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

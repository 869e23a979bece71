import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle
import SluiceLimiter
import SluiceTenancy

/// The events no single change causes, found by looking every `interval`, by one replica at a
/// time (an advisory lock; each event also has a dedupe key, so it is written once):
/// - `budget.threshold` when a budget's spend in the ledger reaches 50, 80 or 100 %, checked for
///   the tenants with ledger rows recorded since the last look (the cost follows traffic);
/// - `key.expiring` seven days before a key expires;
/// - `usage.daily` for each tenant with usage the previous UTC day, once that day is 10 minutes
///   over, in one transaction with a mark that the day is done.
public struct WebhookScheduler: Service {
    let client: PostgresClient
    let ledger: UsageLedger
    let interval: Duration
    let logger: Logger

    public static let thresholds = [50, 80, 100]

    public init(client: PostgresClient, ledger: UsageLedger, interval: Duration = .seconds(60), logger: Logger) {
        self.client = client
        self.ledger = ledger
        self.interval = interval
        self.logger = logger
    }

    public func run() async throws {
        var since = Date()
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            // The first look comes an interval after start: a replica starting is not a reason.
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
            guard !Task.isCancelled && !Task.isShuttingDownGracefully else { return }
            do {
                let started = Date()
                try await pass(now: started, usageSince: since)
                since = started
            } catch {
                logger.warning("webhook checks failed", metadata: ["error": "\(String(reflecting: error))"])
            }
        }
    }

    /// One look; `usageSince`: budgets are checked for tenants with ledger rows recorded since
    /// then (nil: every tenant with a budget).
    public func pass(now: Date = Date(), usageSince: Date? = nil) async throws {
        _ = try await client.ifAdvisoryLockFree(Self.lockID, logger: logger) { _ in
            try await keysExpiring()
            try await dailyUsage(now: now)
            try await budgetThresholds(now: now, usageSince: usageSince)
        }
    }

    static let lockID: Int64 = 0x51_1C_E0_57

    private func enqueue(tenant: UUID, type: String, data: [String: String], dedupe: String) async throws {
        try await client.withConnection { connection in
            try await WebhookOutbox.enqueue(connection, tenantID: tenant, type: type, data: data, dedupeKey: dedupe, logger: logger)
        }
    }

    private func keysExpiring() async throws {
        let rows = try await client.query("""
            SELECT id, tenant_id, expires_at FROM api_keys
            WHERE revoked_at IS NULL AND expires_at > now() AND expires_at <= now() + interval '7 days'
            """, logger: logger)
        for try await (key, tenant, expires) in rows.decode((String, UUID, Date).self) {
            try await enqueue(tenant: tenant, type: "key.expiring",
                              data: ["key_id": key, "tenant_id": tenant.uuidString.lowercased(), "expires_at": expires.formatted(.iso8601)],
                              dedupe: "key.expiring:\(key):\(Int64(expires.timeIntervalSince1970))")
        }
    }

    private func dailyUsage(now: Date) async throws {
        let today = SpendPeriod.day(ofUnixSeconds: Int64(now.timeIntervalSince1970))
        let todayStart = SpendPeriod.start(ofDay: today)
        guard Int64(now.timeIntervalSince1970) - todayStart >= 600 else { return }  // yesterday's late rows settle
        let start = Date(timeIntervalSince1970: TimeInterval(todayStart - 86_400))
        let end = Date(timeIntervalSince1970: TimeInterval(todayStart))
        let day = start.formatted(.iso8601.year().month().day())
        try await client.withTransaction(logger: logger) { connection in
            var fresh = false
            for try await _ in try await connection.query("""
                INSERT INTO webhook_marks (name) VALUES (\("usage.daily:\(day)")) ON CONFLICT DO NOTHING RETURNING name
                """, logger: logger).decode(String.self) { fresh = true }
            guard fresh else { return }  // this day's events are written
            let rows = try await connection.query("""
                SELECT tenant_id, count(*)::bigint, sum(prompt_tokens)::bigint, sum(completion_tokens)::bigint,
                       sum(cost_micro_usd)::bigint
                FROM usage_ledger WHERE at >= \(start) AND at < \(end) GROUP BY 1
                """, logger: logger)
            var totals: [(UUID, Int64, Int64, Int64, Int64)] = []
            for try await row in rows.decode((UUID, Int64, Int64, Int64, Int64).self) { totals.append(row) }
            for (tenant, requests, prompt, completion, cost) in totals {
                try await WebhookOutbox.enqueue(connection, tenantID: tenant, type: "usage.daily", data: [
                    "tenant_id": tenant.uuidString.lowercased(), "date": day, "requests": String(requests),
                    "prompt_tokens": String(prompt), "completion_tokens": String(completion), "cost_micro_usd": String(cost),
                ], dedupeKey: "usage.daily:\(tenant.uuidString.lowercased()):\(day)", logger: logger)
            }
        }
    }

    private func budgetThresholds(now: Date, usageSince: Date?) async throws {
        let today = SpendPeriod.day(ofUnixSeconds: Int64(now.timeIntervalSince1970))
        // Tenants with a budget anywhere (their own, a model's or a key's) and, when `usageSince`
        // is given, ledger rows recorded since then.
        let rows = try await client.query("""
            WITH active AS (
                SELECT DISTINCT tenant_id FROM usage_ledger WHERE \(usageSince)::timestamptz IS NOT NULL
                    AND recorded_at >= \(usageSince)::timestamptz
            )
            SELECT t.id, t.limits::text, t.model_limits::text,
                   coalesce(array_agg(k.id) FILTER (WHERE k.id IS NOT NULL), '{}'),
                   coalesce(array_agg(k.limits::text) FILTER (WHERE k.id IS NOT NULL), '{}')
            FROM tenants t LEFT JOIN api_keys k ON k.tenant_id = t.id AND k.revoked_at IS NULL
                 AND (k.limits ? 'monthly_budget_usd' OR k.limits ? 'daily_budget_usd')
            WHERE (t.limits ? 'monthly_budget_usd' OR t.limits ? 'daily_budget_usd'
                   OR t.model_limits::text LIKE '%budget_usd%' OR k.id IS NOT NULL)
              AND (\(usageSince)::timestamptz IS NULL OR t.id IN (SELECT tenant_id FROM active))
            GROUP BY t.id
            """, logger: logger)
        let decoder = JSONDecoder()
        for try await (tenant, limitsText, modelText, keyIDs, keyLimits) in rows.decode((UUID, String, String, [String], [String]).self) {
            var budgets: [BudgetSpec] = []
            if let limits = try? decoder.decode(Limits.self, from: Data(limitsText.utf8)) {
                budgets += BudgetSpec.budgets(of: limits, level: "tenant", field: "t")
            }
            if let models = try? decoder.decode([String: Limits].self, from: Data(modelText.utf8)) {
                for (model, limits) in models { budgets += BudgetSpec.budgets(of: limits, level: "model", field: "m:\(model)") }
            }
            for (key, text) in zip(keyIDs, keyLimits) {
                if let limits = try? decoder.decode(Limits.self, from: Data(text.utf8)) {
                    budgets += BudgetSpec.budgets(of: limits, level: "key", field: "k:\(key)")
                }
            }
            // A zero budget allows no spend at all: no thresholds to announce.
            budgets.removeAll { $0.limitMicroUSD <= 0 }
            guard !budgets.isEmpty else { continue }
            let spend = try await ledger.spend(tenantID: tenant.uuidString.lowercased(), month: today / 100, day: today)
            for budget in budgets {
                let daily = budget.period == .day
                let spent = (daily ? spend.day : spend.month)[budget.field] ?? 0
                let period = daily ? String(today) : String(today / 100)
                for threshold in Self.thresholds where spent * 100 >= budget.limitMicroUSD * Int64(threshold) {
                    try await enqueue(tenant: tenant, type: "budget.threshold", data: [
                        "tenant_id": tenant.uuidString.lowercased(), "budget": budget.name, "scope": budget.field,
                        "period": period, "threshold_percent": String(threshold), "spent_micro_usd": String(spent),
                        "limit_micro_usd": String(budget.limitMicroUSD),
                    ], dedupe: "budget.threshold:\(tenant.uuidString.lowercased()):\(budget.name):\(budget.field):\(period):\(threshold)")
                }
            }
        }
    }
}

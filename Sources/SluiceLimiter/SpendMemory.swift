import Synchronization

/// Budgets while Redis is unreachable (`open` and `local` policies): each replica keeps the last
/// spend Redis told it for every budget it checked, and adds what it admits without Redis, so a
/// budget stays enforced from what the replica knows. A budget it never saw counts from zero.
/// Bounded: at most `capacity` budgets are remembered (past it, the oldest periods go first).
final class SpendMemory: Sendable {
    private struct Entry {
        var period: Int
        var spent: Int64
    }

    private let capacity: Int
    private let entries = Mutex<[String: Entry]>([:])

    init(capacity: Int) {
        self.capacity = capacity
    }

    private static func name(_ tenantID: String, _ budget: BudgetSpec) -> String {
        "\(tenantID)|\(budget.period.rawValue)|\(budget.field)"
    }

    private static func period(_ budget: BudgetSpec, month: Int, day: Int) -> Int {
        budget.period == .month ? month : day
    }

    /// What admit.lua reported: the budgets' spend after its batch.
    func learn(tenantID: String, _ spends: [(BudgetSpec, Int64)], month: Int, day: Int) {
        guard !spends.isEmpty else { return }
        entries.withLock { entries in
            if entries.count + spends.count > capacity {
                entries = entries.filter { $0.value.period == month || $0.value.period == day }
                if entries.count + spends.count > capacity { entries.removeAll() }
            }
            for (budget, spent) in spends {
                entries[Self.name(tenantID, budget)] = Entry(period: Self.period(budget, month: month, day: day), spent: spent)
            }
        }
    }

    /// Checks the request's budgets against what this replica knows and, when they all pass,
    /// counts its reserved cost: nil when admitted, else the budget it would pass.
    func admit(_ request: AdmitRequest, plan: LimitPlan, today: Int = SpendPeriod.today) -> Denial? {
        guard !plan.budgets.isEmpty else { return nil }
        let month = today / 100
        let cost = request.reservedCostMicroUSD
        return entries.withLock { entries in
            for budget in plan.budgets {
                let period = Self.period(budget, month: month, day: today)
                let known = entries[Self.name(request.tenantID, budget)].flatMap { $0.period == period ? $0.spent : nil } ?? 0
                if known + cost > budget.limitMicroUSD {
                    return Denial(reason: .budgetExhausted, limit: budget.name, retryAfter: .seconds(1), headers: .none,
                                  fromCache: false, spentMicroUSD: known, limitMicroUSD: budget.limitMicroUSD)
                }
            }
            for budget in plan.budgets {
                let period = Self.period(budget, month: month, day: today)
                let name = Self.name(request.tenantID, budget)
                let known = entries[name].flatMap { $0.period == period ? $0.spent : nil } ?? 0
                if entries[name] != nil || entries.count < capacity {
                    entries[name] = Entry(period: period, spent: known + cost)
                }
            }
            return nil
        }
    }
}

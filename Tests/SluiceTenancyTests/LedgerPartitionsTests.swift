import Foundation
import Testing

@testable import SluiceTenancy

/// Which monthly partitions retention drops (no I/O).
@Suite("Ledger retention")
struct LedgerPartitionsTests {
    static func date(_ text: String) -> Date { ISO8601DateFormatter().date(from: text)! }

    @Test func wholeMonthsBeforeTheRetentionAreDroppedOthersKept() {
        let names = ["usage_ledger_2026_08", "usage_ledger_2026_09", "usage_ledger_2026_10", "usage_ledger_2026_11",
                     "usage_ledger_2026_12", "usage_ledger_default", "usage_ledger_2026_13", "usage_ledger_x", "other_2026_01"]
        let now = Self.date("2026-11-27T12:00:00Z")
        #expect(LedgerPartitions.expired(names, now: now, retentionMonths: 2) == ["usage_ledger_2026_08"])
        #expect(LedgerPartitions.expired(names, now: now, retentionMonths: 1) == ["usage_ledger_2026_08", "usage_ledger_2026_09"])
        #expect(LedgerPartitions.expired(names, now: Self.date("2027-01-01T00:00:00Z"), retentionMonths: 1)
                == ["usage_ledger_2026_08", "usage_ledger_2026_09", "usage_ledger_2026_10", "usage_ledger_2026_11"])
        #expect(LedgerPartitions.expired(names, now: now, retentionMonths: 24).isEmpty)
    }
}

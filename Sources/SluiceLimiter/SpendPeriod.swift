#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// UTC calendar days and months as the spend hashes name them (YYYYMMDD, YYYYMM), with the
/// same arithmetic as lua/shared.lua (H. Hinnant's civil calendar algorithms): no Foundation
/// calendar on the request path.
public enum SpendPeriod {
    /// Today (YYYYMMDD, UTC) by this machine's clock.
    public static var today: Int { day(ofUnixSeconds: Int64(time(nil))) }

    /// The UTC day (YYYYMMDD) of a Unix time in seconds.
    public static func day(ofUnixSeconds seconds: Int64) -> Int {
        let (year, month, day) = civil(fromDays: floorDiv(seconds, 86_400))
        return (year * 100 + month) * 100 + day
    }

    /// The Unix time (seconds) a UTC day (YYYYMMDD) or month (YYYYMM) begins.
    public static func start(ofDay day: Int) -> Int64 {
        days(year: day / 10_000, month: day / 100 % 100, day: day % 100) * 86_400
    }

    public static func start(ofMonth month: Int) -> Int64 {
        days(year: month / 100, month: month % 100, day: 1) * 86_400
    }

    /// The Unix time (seconds) the month after `month` (YYYYMM) begins.
    public static func end(ofMonth month: Int) -> Int64 {
        let (year, number) = (month / 100, month % 100)
        return number == 12 ? days(year: year + 1, month: 1, day: 1) * 86_400 : days(year: year, month: number + 1, day: 1) * 86_400
    }

    static func civil(fromDays days: Int64) -> (year: Int, month: Int, day: Int) {
        let z = days + 719_468
        let era = floorDiv(z, 146_097)
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        return (Int(yoe + era * 400 + (month <= 2 ? 1 : 0)), Int(month), Int(day))
    }

    static func days(year: Int, month: Int, day: Int) -> Int64 {
        let y = Int64(month <= 2 ? year - 1 : year)
        let era = floorDiv(y, 400)
        let yoe = y - era * 400
        let mp = Int64(month > 2 ? month - 3 : month + 9)
        let doy = (153 * mp + 2) / 5 + Int64(day) - 1
        return era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468
    }

    private static func floorDiv(_ a: Int64, _ b: Int64) -> Int64 {
        a >= 0 ? a / b : -((-a + b - 1) / b)
    }
}

/// A tenant's spend for a month and a day, from the ledger: micro-USD per spend field (`t`,
/// `k:<key id>`, `m:<model>`).
public struct SpendSums: Sendable, Equatable {
    public var month: [String: Int64]
    public var day: [String: Int64]

    public init(month: [String: Int64] = [:], day: [String: Int64] = [:]) {
        self.month = month
        self.day = day
    }
}

/// Where a tenant's spend is rebuilt from when Redis has lost it: the ledger.
public protocol SpendSource: Sendable {
    /// The tenant's settled spend in the UTC month (YYYYMM) and day (YYYYMMDD).
    func spend(tenantID: String, month: Int, day: Int) async throws -> SpendSums
}

/// No ledger (unit tests and tools): spend starts at zero.
public struct NoSpendSource: SpendSource {
    public init() {}
    public func spend(tenantID: String, month: Int, day: Int) async throws -> SpendSums { SpendSums() }
}

import Foundation

/// The counts of a backend's `usage` object, each one checked. A backend is not trusted to be
/// sane: a count that is negative, not a number or not finite is treated as unreported, one
/// above `maximum` is cut to it, a fraction is rounded up; each of these sets `clamped`.
struct ReportedUsage: Sendable, Equatable {
    static let maximum = 1_000_000_000

    var prompt: Int?
    var completion: Int?
    /// `prompt_tokens_details.cached_tokens`: prompt tokens the backend served from its cache.
    var cachedPrompt: Int?
    var clamped = false

    init(prompt: Int?, completion: Int?, cachedPrompt: Int? = nil, clamped: Bool = false) {
        self.cachedPrompt = cachedPrompt
        self.prompt = prompt
        self.completion = completion
        self.clamped = clamped
    }

    /// One count: nil when absent or unusable; `clamped` when it was not a sane integer.
    static func count(_ value: Double?) -> (Int?, clamped: Bool) {
        guard let double = value else { return (nil, true) }
        guard double.isFinite, double >= 0 else { return (nil, true) }
        if double > Double(maximum) { return (maximum, true) }
        let whole = double.rounded(.up)
        return (Int(whole), whole != double)
    }
}

/// The token counts a request is billed for, and where they came from. When the backend did
/// not report usage (or reported nonsense), the request is billed at least its prompt estimate
/// plus what was delivered: an unreported count is never billed as zero.
public struct BilledUsage: Sendable, Equatable {
    public enum Source: String, Sendable {
        /// The backend's own counts.
        case backend
        /// At least one count is the gateway's estimate.
        case estimated
    }

    public var prompt: Int
    public var completion: Int
    /// Of `prompt`, the tokens the backend reported as cached (billed at the cached price).
    public var cachedPrompt: Int
    public var source: Source
    /// Some backend count was out of range or not an integer.
    public var clamped: Bool

    public static let nothing = BilledUsage(prompt: 0, completion: 0, source: .backend, clamped: false)

    public init(prompt: Int, completion: Int, cachedPrompt: Int = 0, source: Source, clamped: Bool) {
        self.cachedPrompt = min(max(0, cachedPrompt), prompt)
        self.prompt = prompt
        self.completion = completion
        self.source = source
        self.clamped = clamped
    }

    /// - Parameters:
    ///   - delivered: completion tokens the gateway saw go to the client (its estimate).
    ///   - expectsCompletion: false for embeddings, whose usage has no completion count.
    init(reported: ReportedUsage?, promptEstimate: Int, delivered: Int, expectsCompletion: Bool = true) {
        let completion = reported?.completion ?? (expectsCompletion ? delivered : 0)
        let complete = reported?.prompt != nil && (reported?.completion != nil || !expectsCompletion)
        // Cached tokens count only with the backend's own prompt count (they are part of it).
        self.init(prompt: reported?.prompt ?? promptEstimate, completion: completion,
                  cachedPrompt: reported?.prompt != nil ? reported?.cachedPrompt ?? 0 : 0,
                  source: complete ? .backend : .estimated, clamped: reported?.clamped ?? false)
    }

    /// Completion tokens in a whole answer whose usage is unknown: a byte count over four,
    /// rounded up (the answer's JSON framing makes it an overestimate, never an underestimate
    /// of the text).
    static func deliveredEstimate(bytes: Int) -> Int { (bytes + 3) / 4 }
}

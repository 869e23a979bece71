import Foundation
import SluiceLimiter

/// OpenAI's rate-limit header names and value formats.
enum RateLimitHeaderFields {
    static func fields(_ headers: RateLimitHeaders) -> [(String, String)] {
        var fields: [(String, String)] = []
        if let requests = headers.requests {
            fields += [("x-ratelimit-limit-requests", String(requests.limit)),
                       ("x-ratelimit-remaining-requests", String(requests.remaining)),
                       ("x-ratelimit-reset-requests", duration(requests.reset))]
        }
        if let tokens = headers.tokens {
            fields += [("x-ratelimit-limit-tokens", String(tokens.limit)),
                       ("x-ratelimit-remaining-tokens", String(tokens.remaining)),
                       ("x-ratelimit-reset-tokens", duration(tokens.reset))]
        }
        return fields
    }

    /// Go-style durations as OpenAI sends them: `20ms`, `1s`, `1.5s`, `6m0s`, `1h2m3s`.
    static func duration(_ value: Duration) -> String {
        let milliseconds = Int((Double(value.components.seconds) * 1_000 + Double(value.components.attoseconds) / 1e15).rounded(.up))
        if milliseconds < 1_000 { return "\(milliseconds)ms" }
        let hours = milliseconds / 3_600_000
        let minutes = milliseconds % 3_600_000 / 60_000
        let seconds = Double(milliseconds % 60_000) / 1_000
        let secondsText = seconds == seconds.rounded() ? String(Int(seconds)) : String(format: "%.3g", seconds)
        if hours > 0 { return "\(hours)h\(minutes)m\(secondsText)s" }
        if minutes > 0 { return "\(minutes)m\(secondsText)s" }
        return "\(secondsText)s"
    }

    /// `retry-after`: whole seconds, rounded up, at least 1.
    static func retryAfter(_ value: Duration) -> String {
        let seconds = Double(value.components.seconds) + Double(value.components.attoseconds) / 1e18
        return String(max(1, Int(seconds.rounded(.up))))
    }
}

import SluiceWebhooks

/// `webhooks:` in the YAML: delivery timing, and whether endpoints may be on private networks.
public struct WebhookSettings: Sendable, Equatable {
    /// Endpoints on loopback, private or link-local addresses (off: a tenant must not make the
    /// gateway call its own network).
    public var allowPrivateNetworks = false
    public var firstRetryMilliseconds = 5_000
    public var maximumRetryMilliseconds = 7_200_000
    /// Failing this long, a delivery is given up and its endpoint disabled.
    public var giveUpAfterSeconds = 86_400
    public var pollIntervalMilliseconds = 1_000
    /// How often budget thresholds, expiring keys and daily usage are looked for.
    public var checkIntervalSeconds = 60

    public init() {}

    mutating func read(_ section: ConfigReader) throws(ConfigurationError) {
        try section.allow(["allow_private_networks", "first_retry_ms", "max_retry_ms", "give_up_after_seconds",
                           "poll_interval_ms", "check_interval_seconds"])
        if let value = try section.bool("allow_private_networks") { allowPrivateNetworks = value }
        if let value = try section.int("first_retry_ms", 10...3_600_000) { firstRetryMilliseconds = value }
        if let value = try section.int("max_retry_ms", 10...86_400_000) { maximumRetryMilliseconds = value }
        if let value = try section.int("give_up_after_seconds", 1...(30 * 86_400)) { giveUpAfterSeconds = value }
        if let value = try section.int("poll_interval_ms", 10...60_000) { pollIntervalMilliseconds = value }
        if let value = try section.int("check_interval_seconds", 1...86_400) { checkIntervalSeconds = value }
    }
}

extension WebhookSettings {
    var retryPolicy: WebhookRetryPolicy {
        var policy = WebhookRetryPolicy()
        policy.firstDelay = .milliseconds(firstRetryMilliseconds)
        policy.maximumDelay = .milliseconds(maximumRetryMilliseconds)
        policy.giveUpAfter = .seconds(giveUpAfterSeconds)
        policy.pollInterval = .milliseconds(pollIntervalMilliseconds)
        policy.claimLease = .seconds(30)
        return policy
    }
}

/// `billing_export:` in the YAML: which billing systems get the ledger's usage. Each exporter is
/// on when its section is present; its secret comes only from the environment
/// (`SLUICE_STRIPE_SECRET_KEY`, `SLUICE_OPENMETER_TOKEN`, or their `_FILE`).
public struct BillingExportSettings: Sendable, Equatable {
    public struct Stripe: Sendable, Equatable {
        public var url = "https://api.stripe.com"
        public var eventName = "sluice_usage"
        /// `cost_micro_usd` (default) or `tokens`.
        public var value = "cost_micro_usd"
        public var secretKey = ""
    }

    public struct OpenMeter: Sendable, Equatable {
        public var url = "https://openmeter.cloud"
        public var eventType = "sluice.usage"
        public var source = "sluice"
        public var token = ""
    }

    public var intervalSeconds = 10
    public var stripe: Stripe?
    public var openMeter: OpenMeter?

    public init() {}

    mutating func read(_ section: ConfigReader) throws(ConfigurationError) {
        try section.allow(["interval_seconds", "stripe", "openmeter"])
        if let value = try section.int("interval_seconds", 1...3_600) { intervalSeconds = value }
        if let reader = try section.mapping("stripe") {
            try reader.allow(["url", "event_name", "value"])
            var stripe = Stripe()
            if let value = try reader.string("url") { stripe.url = value }
            if let value = try reader.string("event_name") {
                guard (1...100).contains(value.utf8.count) else {
                    throw ConfigurationError(key: reader.key("event_name"), problem: "must be 1 to 100 characters")
                }
                stripe.eventName = value
            }
            if let value = try reader.string("value") {
                guard ["cost_micro_usd", "tokens"].contains(value) else {
                    throw ConfigurationError(key: reader.key("value"), problem: "must be cost_micro_usd or tokens")
                }
                stripe.value = value
            }
            self.stripe = stripe
        }
        if let reader = try section.mapping("openmeter") {
            try reader.allow(["url", "event_type", "source"])
            var openMeter = OpenMeter()
            if let value = try reader.string("url") { openMeter.url = value }
            if let value = try reader.string("event_type") { openMeter.eventType = value }
            if let value = try reader.string("source") { openMeter.source = value }
            self.openMeter = openMeter
        }
    }

    mutating func readSecrets(_ environment: [String: String]) throws(ConfigurationError) {
        if stripe != nil {
            stripe?.secretKey = try GatewayConfiguration.secret("SLUICE_STRIPE_SECRET_KEY", environment)
            guard stripe?.secretKey.isEmpty == false else {
                throw ConfigurationError(key: "SLUICE_STRIPE_SECRET_KEY", problem: "is required when billing_export.stripe is set")
            }
        }
        if openMeter != nil {
            openMeter?.token = try GatewayConfiguration.secret("SLUICE_OPENMETER_TOKEN", environment)
            guard openMeter?.token.isEmpty == false else {
                throw ConfigurationError(key: "SLUICE_OPENMETER_TOKEN", problem: "is required when billing_export.openmeter is set")
            }
        }
    }
}

import CoreMetrics
import Metrics
import Synchronization

/// The data plane's metrics, through swift-metrics (the replica exports them to Prometheus).
/// Labels are bounded: endpoint, model (configured names only, else `other`), status, limiter
/// decision, configured backend; never a client's string. Handles are made once per series and
/// cached, so a request costs a dictionary lookup and atomic updates.
public final class DataPlaneMetrics: Sendable {
    /// The metric names (the alert rules and the dashboard use them).
    public enum Name {
        public static let requests = "sluice_requests_total"
        public static let requestDuration = "sluice_request_duration_seconds"
        public static let timeToFirstToken = "sluice_time_to_first_token_seconds"
        public static let inFlight = "sluice_requests_in_flight"
        public static let tokens = "sluice_tokens_total"
        public static let limiterDecisions = "sluice_limiter_decisions_total"
        public static let backendDuration = "sluice_backend_request_duration_seconds"
        public static let backendErrors = "sluice_backend_errors_total"
    }

    private let factory: any MetricsFactory
    // Handles by series key, made on first use: a series appears only once something is recorded.
    private let counts = Mutex<[String: Counter]>([:])
    private let durations = Mutex<[String: Timer]>([:])
    private let firstTokens = Mutex<[String: Timer]>([:])
    private let tokenCounters = Mutex<[String: Counter]>([:])
    private let decisionHandles = Mutex<[String: Counter]>([:])
    private let backendHandles = Mutex<[String: Timer]>([:])
    private let backendErrorHandles = Mutex<[String: Counter]>([:])
    private let inFlight: Meter

    public init(factory: any MetricsFactory = NOOPMetricsHandler.instance) {
        self.factory = factory
        self.inFlight = Meter(label: Name.inFlight, dimensions: [], factory: factory)
    }

    /// An inference call is being handled on this replica (the autoscaler's per-pod metric).
    public func requestStarted() {
        inFlight.increment()
    }

    /// Its answer is complete (or abandoned).
    public func requestEnded() {
        inFlight.decrement()
    }

    /// `modelLabel` is the caller's bounded choice, never the client's string.
    func request(_ record: AccessRecord, modelLabel model: String) {
        let endpoint = record.endpoint
        let series = endpoint + "|" + model
        handle(series + "|" + String(record.status), in: counts) {
            Counter(label: Name.requests, dimensions: [("endpoint", endpoint), ("model", model), ("status", String(record.status))],
                    factory: factory)
        }.increment()
        handle(series, in: durations) {
            Timer(label: Name.requestDuration, dimensions: [("endpoint", endpoint), ("model", model)], factory: factory)
        }.record(duration: record.latency)
        if let firstByte = record.firstByte {
            handle(model, in: firstTokens) {
                Timer(label: Name.timeToFirstToken, dimensions: [("model", model)], factory: factory)
            }.record(duration: firstByte - record.started)
        }
        if record.promptTokens > 0 { tokens(model, "in").increment(by: record.promptTokens) }
        if record.completionTokens > 0 { tokens(model, "out").increment(by: record.completionTokens) }
    }

    private func tokens(_ model: String, _ direction: String) -> Counter {
        handle(model + "|" + direction, in: tokenCounters) {
            Counter(label: Name.tokens, dimensions: [("model", model), ("direction", direction)], factory: factory)
        }
    }

    func limiterDecision(_ decision: String) {
        handle(decision, in: decisionHandles) {
            Counter(label: Name.limiterDecisions, dimensions: [("decision", decision)], factory: factory)
        }.increment()
    }

    /// One call to a backend (its configured URL) until the response head, or its failure.
    func backendAnswered(_ backend: String, after duration: Duration) {
        handle(backend, in: backendHandles) {
            Timer(label: Name.backendDuration, dimensions: [("backend", backend)], factory: factory)
        }.record(duration: duration)
    }

    /// `kind`: connect, timeout, protocol, status_5xx, status_auth (bounded by the caller).
    func backendFailed(_ backend: String, kind: String) {
        handle(backend + "|" + kind, in: backendErrorHandles) {
            Counter(label: Name.backendErrors, dimensions: [("backend", backend), ("kind", kind)], factory: factory)
        }.increment()
    }

    private func handle<Handle: Sendable>(_ key: String, in cache: borrowing Mutex<[String: Handle]>,
                                          make: () -> Handle) -> Handle {
        cache.withLock { cache in
            if let existing = cache[key] { return existing }
            let made = make()
            cache[key] = made
            return made
        }
    }
}

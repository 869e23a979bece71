import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import Synchronization

/// What a mock billing system does with the next requests, in order; then it accepts.
enum Fault: Sendable {
    /// 500 without taking the event.
    case fail
    /// Takes the event, then answers 500: the sender must retry and the duplicate be harmless.
    case takeThenFail
    /// Never answers (the sender's deadline must cut it).
    case hang
}

/// The events a mock billing system took, de-duplicated as the real one does, and what it refused.
final class MockLedger: Sendable {
    struct State {
        var faults: [Fault] = []
        /// Event id → value (Stripe) or data (OpenMeter).
        var events: [String: [String: String]] = [:]
        var duplicates = 0
        var malformed: [String] = []
        var requests = 0
    }

    let state = Mutex(State())

    func nextFault() -> Fault? {
        state.withLock { state in
            state.requests += 1
            return state.faults.isEmpty ? nil : state.faults.removeFirst()
        }
    }

    func refuse(_ reason: String) -> Response {
        state.withLock { $0.malformed.append(reason) }
        return Response(status: .badRequest, headers: [.contentType: "application/json"],
                        body: .init(byteBuffer: ByteBuffer(string: #"{"error": {"type": "invalid_request_error", "message": "\#(reason)"}}"#)))
    }

    /// Takes an event unless its id is known; true when it was new.
    func take(_ id: String, _ fields: [String: String]) -> Bool {
        state.withLock { state in
            if state.events[id] != nil {
                state.duplicates += 1
                return false
            }
            state.events[id] = fields
            return true
        }
    }
}

enum MockBillingSystems {
    /// Stripe's `POST /v1/billing/meter_events`, checked as its API reference describes it.
    static func stripe(_ ledger: MockLedger, secretKey: String, eventName: String) -> Router<BasicRequestContext> {
        let router = Router()
        router.post("/v1/billing/meter_events") { request, _ -> Response in
            let fault = ledger.nextFault()
            if case .fail = fault { return Response(status: .internalServerError) }
            if case .hang = fault { try await Task.sleep(for: .seconds(30)) }
            guard request.headers[.authorization] == "Bearer \(secretKey)" else { return ledger.refuse("bad authorization") }
            guard request.headers[.contentType] == "application/x-www-form-urlencoded" else { return ledger.refuse("bad content type") }
            let body = String(buffer: try await request.body.collect(upTo: 65_536))
            var form: [String: String] = [:]
            for pair in body.split(separator: "&") {
                let parts = pair.split(separator: "=", maxSplits: 1).map { String($0).removingPercentEncoding ?? "" }
                guard parts.count == 2, form[parts[0]] == nil else { return ledger.refuse("malformed form") }
                form[parts[0]] = parts[1]
            }
            let allowed: Set<String> = ["event_name", "payload[stripe_customer_id]", "payload[value]", "identifier", "timestamp"]
            guard Set(form.keys) == allowed else { return ledger.refuse("fields \(form.keys.sorted())") }
            guard form["event_name"] == eventName else { return ledger.refuse("event_name") }
            guard let customer = form["payload[stripe_customer_id]"], customer.hasPrefix("cus_") else { return ledger.refuse("customer") }
            guard let value = form["payload[value]"], let amount = Int64(value), amount >= 0 else { return ledger.refuse("value") }
            guard let identifier = form["identifier"], (1...100).contains(identifier.utf8.count) else { return ledger.refuse("identifier") }
            guard let timestamp = form["timestamp"].flatMap(Double.init),
                  timestamp > Date().timeIntervalSince1970 - 35 * 86_400, timestamp < Date().timeIntervalSince1970 + 300
            else { return ledger.refuse("timestamp") }
            guard request.headers[HTTPField.Name("idempotency-key")!] == identifier else { return ledger.refuse("idempotency key") }
            if !ledger.take(identifier, ["customer": customer, "value": value]) {
                // Stripe answers a repeated idempotency key with the first answer.
                return Response(status: .ok, headers: [.contentType: "application/json"],
                                body: .init(byteBuffer: ByteBuffer(string: #"{"object": "billing.meter_event", "identifier": "\#(identifier)"}"#)))
            }
            if case .takeThenFail = fault { return Response(status: .internalServerError) }
            return Response(status: .ok, headers: [.contentType: "application/json"],
                            body: .init(byteBuffer: ByteBuffer(string: #"{"object": "billing.meter_event", "identifier": "\#(identifier)"}"#)))
        }
        return router
    }

    /// OpenMeter's `POST /api/v1/events`: a JSON array of CloudEvents 1.0.
    static func openMeter(_ ledger: MockLedger, token: String) -> Router<BasicRequestContext> {
        let router = Router()
        router.post("/api/v1/events") { request, _ -> Response in
            let fault = ledger.nextFault()
            if case .fail = fault { return Response(status: .internalServerError) }
            if case .hang = fault { try await Task.sleep(for: .seconds(30)) }
            guard request.headers[.authorization] == "Bearer \(token)" else { return ledger.refuse("bad authorization") }
            guard request.headers[.contentType] == "application/cloudevents-batch+json" else { return ledger.refuse("bad content type") }
            let body = try await request.body.collect(upTo: 1 << 20)
            guard let events = try? JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [[String: Any]], !events.isEmpty else {
                return ledger.refuse("not a batch")
            }
            for event in events {
                guard event["specversion"] as? String == "1.0", let id = event["id"] as? String, !id.isEmpty,
                      let source = event["source"] as? String, !source.isEmpty, event["type"] as? String != nil,
                      let subject = event["subject"] as? String, let time = event["time"] as? String,
                      (try? Date(time, strategy: .iso8601)) != nil, let data = event["data"] as? [String: Any],
                      let cost = data["cost_micro_usd"] as? Int, let model = data["model"] as? String
                else { return ledger.refuse("malformed event") }
                _ = ledger.take("\(source)|\(id)", ["subject": subject, "cost": String(cost), "model": model])
            }
            if case .takeThenFail = fault { return Response(status: .internalServerError) }
            return Response(status: .noContent)
        }
        return router
    }

    /// Runs `router` on a loopback port until `body` returns.
    static func serve<T: Sendable>(_ router: Router<BasicRequestContext>, _ body: @Sendable (Int) async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: Void.self) { group in
            let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
            var logger = Logger(label: "mock-billing")
            logger.logLevel = .critical
            let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                                  onServerRunning: { continuation.yield($0.localAddress?.port ?? 0) }, logger: logger)
            group.addTask { try await app.run() }
            var iterator = ports.makeAsyncIterator()
            let port = await iterator.next() ?? 0
            let result = try await body(port)
            group.cancelAll()
            return result
        }
    }
}

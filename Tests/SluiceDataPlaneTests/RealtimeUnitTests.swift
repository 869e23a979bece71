import Foundation
import NIOCore
import Testing

@testable import SluiceDataPlane

/// What the gateway reads of Realtime traffic: the bill in a backend's `response.done`, and
/// the key and subprotocol of a handshake.
@Suite("Realtime events and handshakes")
struct RealtimeUnitTests {
    private func usage(_ json: String) -> BilledUsage? {
        RealtimeEvent.responseUsage(ByteBuffer(string: json))
    }

    @Test func aResponseDoneCarriesTheBill() {
        let billed = usage(#"{"type":"response.done","event_id":"e1","response":{"id":"r","status":"completed","usage":{"total_tokens":30,"input_tokens":20,"output_tokens":10,"input_token_details":{"cached_tokens":5}}}}"#)
        #expect(billed == BilledUsage(prompt: 20, completion: 10, cachedPrompt: 5, source: .backend, clamped: false))
    }

    @Test func otherEventsAndHostileCountsBillNothingOrAreClamped() {
        #expect(usage(#"{"type":"response.output_text.delta","delta":"response.done"}"#) == nil, "only the event's type counts")
        #expect(usage(#"{"type":"response.done","response":{"status":"cancelled"}}"#) == nil, "no usage, nothing to bill")
        #expect(usage(#"{"type":"response.done","response":{"usage":{"input_tokens":-5,"output_tokens":3}}}"#) == nil)
        #expect(usage("not json but \"response.done\"") == nil)
        let huge = usage(#"{"type":"response.done","response":{"usage":{"input_tokens":1e300,"output_tokens":2.5}}}"#)
        #expect(huge?.prompt == ReportedUsage.maximum && huge?.completion == 3 && huge?.clamped == true)
    }

    @Test func theKeyComesFromTheHeaderOrTheBrowsersSubprotocolAndIsNeverNamedBack() {
        func call(_ authorization: String?, _ offered: [String]) -> RealtimeCall {
            RealtimeCall(authorization: authorization, subprotocols: offered, model: "m", passHeaders: [], requestID: "r",
                         clientRequestID: nil, eventLoop: nil, origin: nil)
        }
        let browser = call(nil, ["realtime", "openai-insecure-api-key.slk_abc_def", "openai-beta.realtime-v1"])
        #expect(browser.credentials == "Bearer slk_abc_def")
        #expect(browser.chosenSubprotocol == "realtime")
        #expect(call("Bearer header-key", ["openai-insecure-api-key.other"]).credentials == "Bearer header-key")
        #expect(call(nil, ["openai-insecure-api-key.only"]).chosenSubprotocol == nil)
        #expect(call(nil, []).credentials == nil)
    }
}

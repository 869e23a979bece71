import Foundation
import NIOCore
import SluiceLimiter
import Testing

@testable import SluiceDataPlane

@Suite("Data plane pieces")
struct DataPlaneUnitTests {
    @Test func usageIsFoundWithoutParsingTheWholeAnswer() {
        let body = ByteBuffer(string: #"{"id":"x","choices":[{"message":{"content":"the word \"usage\": {} appears here"}}],"usage": {"prompt_tokens":12,"completion_tokens":34,"total_tokens":46}}"#)
        #expect(ResponseUsage.parse(body) == ReportedUsage(prompt: 12, completion: 34))
        #expect(ResponseUsage.parse(ByteBuffer(string: #"{"choices":[]}"#)) == nil)
        #expect(ResponseUsage.parse(ByteBuffer(string: #"{"usage": null}"#)) == nil)
        #expect(ResponseUsage.parse(ByteBuffer(string: #"{"usage": {"prompt_tokens": 1"#)) == nil)
    }

    /// A backend's counts are not trusted: nonsense is clamped and flagged, and a count that is
    /// missing or unusable is billed at the gateway's estimate, never as zero.
    @Test func backendUsageIsCheckedAndUnreportedUsageIsEstimated() {
        func reported(_ json: String) -> ReportedUsage? { ResponseUsage.parse(ByteBuffer(string: #"{"usage": "# + json + "}")) }
        #expect(reported(#"{"prompt_tokens": -5, "completion_tokens": 7}"#) == ReportedUsage(prompt: nil, completion: 7, clamped: true))
        #expect(reported(#"{"prompt_tokens": 1e20, "completion_tokens": 2000000000}"#)
            == ReportedUsage(prompt: 1_000_000_000, completion: 1_000_000_000, clamped: true))
        #expect(reported(#"{"prompt_tokens": 3.2, "completion_tokens": "12"}"#) == ReportedUsage(prompt: 4, completion: nil, clamped: true))
        #expect(reported(#"{"prompt_tokens": 3, "completion_tokens": 4}"#) == ReportedUsage(prompt: 3, completion: 4, clamped: false))

        let honest = BilledUsage(reported: ReportedUsage(prompt: 3, completion: 4), promptEstimate: 50, delivered: 9)
        #expect(honest == BilledUsage(prompt: 3, completion: 4, source: .backend, clamped: false))
        let missing = BilledUsage(reported: nil, promptEstimate: 50, delivered: 9)
        #expect(missing == BilledUsage(prompt: 50, completion: 9, source: .estimated, clamped: false))
        let negative = BilledUsage(reported: reported(#"{"prompt_tokens": -5, "completion_tokens": 7}"#), promptEstimate: 50, delivered: 9)
        #expect(negative == BilledUsage(prompt: 50, completion: 7, source: .estimated, clamped: true))
        let embedding = BilledUsage(reported: ReportedUsage(prompt: 6, completion: nil), promptEstimate: 50, delivered: 0,
                                    expectsCompletion: false)
        #expect(embedding == BilledUsage(prompt: 6, completion: 0, source: .backend, clamped: false))
    }

    @Test func theUsageChunkIsHiddenUnlessAskedAndEventsSurviveAnySplit() {
        let stream = """
            data: {"choices":[{"delta":{"content":"a"}}]}\n\n\
            data: {"choices":[{"delta":{"content":"b"}}]}\n\n\
            data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n\
            data: [DONE]\n\n
            """
        for split in [1, 7, 50, stream.utf8.count] {
            for drop in [true, false] {
                var filter = ServerSentEventsFilter(dropUsageChunk: drop)
                var output = ""
                let bytes = Array(stream.utf8)
                var offset = 0
                while offset < bytes.count {
                    let end = min(offset + split, bytes.count)
                    output += String(buffer: filter.feed(ByteBuffer(bytes: bytes[offset..<end])))
                    offset = end
                }
                output += String(buffer: filter.flush())
                #expect(output.contains("\"usage\"") == !drop)
                #expect(output.hasSuffix("data: [DONE]\n\n"))
                #expect(filter.usage == ReportedUsage(prompt: 3, completion: 2))
                #expect(filter.contentChunks == 2)
            }
        }
    }

    @Test(arguments: [(0.02, "20ms"), (1, "1s"), (1.5, "1.5s"), (360, "6m0s"), (3_723, "1h2m3s")])
    func durationsLookLikeOpenAIs(seconds: Double, text: String) {
        #expect(RateLimitHeaderFields.duration(.milliseconds(Int64(seconds * 1_000))) == text)
    }

    @Test func retryAfterRoundsUpToWholeSeconds() {
        #expect(RateLimitHeaderFields.retryAfter(.milliseconds(1)) == "1")
        #expect(RateLimitHeaderFields.retryAfter(.milliseconds(1_001)) == "2")
        #expect(RateLimitHeaderFields.retryAfter(.seconds(60)) == "60")
    }

    @Test func requestBodiesAreCheckedAndStreamsAskForUsage() throws {
        let parsed = try InferenceRequestBody.parse(
            ByteBuffer(string: #"{"model":"m","messages":[],"stream":true,"max_tokens":5}"#), endpoint: .chatCompletions)
        #expect(parsed.stream && !parsed.clientWantsUsage && parsed.maxOutputTokens == 5)
        #expect(String(buffer: parsed.upstreamBody).contains("include_usage"))
        let asked = try InferenceRequestBody.parse(
            ByteBuffer(string: #"{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":true}}"#),
            endpoint: .chatCompletions)
        #expect(asked.clientWantsUsage)
        for bad in [#"{"model":"m","messages":[],"stream":1}"#, #"{"model":"m","messages":[],"max_tokens":true}"#,
                    #"{"model":"m","messages":[],"max_tokens":2.5}"#, #"{"model":"","messages":[]}"#, #"{"model":"m","input":"x","stream":true}"#] {
            #expect(throws: OpenAIError.self) {
                _ = try InferenceRequestBody.parse(ByteBuffer(string: bad), endpoint: bad.contains("input") ? .embeddings : .chatCompletions)
            }
        }
    }

    /// The include_usage splice, for every shape stream_options can have: the result is valid
    /// JSON, asks for usage, and keeps everything else.
    @Test(arguments: [
        #"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#,
        #"{"model":"m","messages":[],"stream":true,"stream_options":null}"#,
        #"{"model":"m","messages":[],"stream":true,"stream_options":{}}"#,
        #"{"model":"m","messages":[],"stream":true,"stream_options":{ }}"#,
        #"{"model":"m","messages":[],"stream":true,"stream_options":{"continuous_usage_stats":false}}"#,
        #"{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":false}}"#,
        #"{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":null,"x":1}}"#,
        #"  { "model" : "m" , "messages" : [ ] , "stream" : true }  "#,
    ])
    func usageIsSplicedIntoEveryShapeOfStreamOptions(body: String) throws {
        let parsed = try InferenceRequestBody.parse(ByteBuffer(string: body), endpoint: .chatCompletions)
        #expect(!parsed.clientWantsUsage)
        let text = String(buffer: parsed.upstreamBody)
        let sent = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        #expect((sent["stream_options"] as? [String: Any])?["include_usage"] as? Bool == true, "\(text)")
        // Everything else unchanged: compare canonical encodings.
        func canonical(_ object: [String: Any], dropping key: String) throws -> String {
            var object = object
            object[key] = nil
            return String(decoding: try JSONSerialization.data(withJSONObject: object, options: .sortedKeys), as: UTF8.self)
        }
        let original = try #require(try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any])
        #expect(try canonical(sent, dropping: "stream_options") == canonical(original, dropping: "stream_options"))
        if let options = original["stream_options"] as? [String: Any] {
            #expect(try canonical(try #require(sent["stream_options"] as? [String: Any]), dropping: "include_usage")
                == canonical(options, dropping: "include_usage"))
        }
    }

    /// Strict JSON, and no member a backend could read differently from the gateway.
    @Test func malformedOrAmbiguousBodiesAreRefused() {
        let chat = #"{"model":"m","messages":["#
        let refused: [[UInt8]] = [
            Array(#"{"model":"m","messages":[]} {}"#.utf8),                    // two values
            Array(#"{"model":"m","messages":[],}"#.utf8),                      // trailing comma
            Array(#"{"model":"m","messages":[01]}"#.utf8),                     // leading zero
            Array(#"{"model":"m","messages":["\x"]}"#.utf8),                   // bad escape
            Array(#"{"model":"m","messages":["\u12G4"]}"#.utf8),               // bad \u
            Array(chat.utf8) + Array("\"a\tb\"]}".utf8),                       // raw control character
            Array(chat.utf8) + [0x22, 0xC0, 0x80, 0x22, 0x5D, 0x7D],           // overlong
            Array(chat.utf8) + [0x22, 0xED, 0xA0, 0x80, 0x22, 0x5D, 0x7D],     // surrogate
            Array(chat.utf8) + [0x22, 0xFF, 0x22, 0x5D, 0x7D],
            Array(#"{"model":"cheap","model":"dear","messages":[]}"#.utf8),    // duplicate
            Array(#"{"model":"cheap","mod\u0065l":"dear","messages":[]}"#.utf8),  // duplicate, escaped
            Array(chat.utf8) + Array(repeating: UInt8(ascii: "["), count: 100)
                + Array(repeating: UInt8(ascii: "]"), count: 101) + [UInt8(ascii: "}")],  // too deep
            Array(#"{"model":"m","messages":[],"stream":true,"stream_options":"yes"}"#.utf8),
            Array(#"{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":1}}"#.utf8),
            Array(#"["model"]"#.utf8),
            Array(#"{"model":"m","messages":[tru]}"#.utf8),
            Array(#"{"model":"m","messages":[]"#.utf8),
        ]
        for body in refused {
            #expect(throws: OpenAIError.self, "\(String(decoding: body, as: UTF8.self))") {
                _ = try InferenceRequestBody.parse(ByteBuffer(bytes: body), endpoint: .chatCompletions)
            }
        }
        // Escapes are decoded where the gateway reads a value.
        let escaped = try? InferenceRequestBody.parse(
            ByteBuffer(string: #"{"m\u006fdel":"m\u00e9-\ud83d\ude80","messages":[1.5e3,-0,true,null,{"a":"\"\\\/"}]}"#),
            endpoint: .chatCompletions)
        #expect(escaped?.model == "mé-🚀")
    }

    @Test func requestIDsAreVersion4UUIDsAndDiffer() {
        let ids = (0..<10_000).map { _ in RequestID.make() }
        #expect(Set(ids).count == ids.count)
        for id in ids.prefix(100) {
            let parsed = UUID(uuidString: id)
            #expect(parsed != nil && parsed?.uuidString.lowercased() == id, "\(id)")
            #expect(Array(id.utf8)[14] == UInt8(ascii: "4") && "89ab".utf8.contains(Array(id.utf8)[19]))
        }
    }

    /// vLLM puts `"usage": null` in every chunk when usage is requested: those are content, the
    /// last chunk's object is the usage, and only that one is hidden.
    @Test func chunksWithNullUsageAreContentAndTheUsageChunkIsFound() {
        let chunk = #"data: {"choices":[{"index":0,"delta":{"content":"tok "}}],"usage":null}\#n\#n"#
        let role = #"data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}],"usage":null}\#n\#n"#
        let finish = #"data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}\#n\#n"#
        let usage = #"data: {"choices": [ ],"usage":{"prompt_tokens":7,"completion_tokens":3}}\#n\#n"#
        let stream = role + chunk + chunk + chunk + finish + usage + "data: [DONE]\n\n"
        var filter = ServerSentEventsFilter(dropUsageChunk: true)
        let output = String(buffer: filter.feed(ByteBuffer(string: stream))) + String(buffer: filter.flush())
        #expect(filter.contentChunks == 3)
        #expect(filter.usage == ReportedUsage(prompt: 7, completion: 3))
        #expect(!output.contains("prompt_tokens") && output.components(separatedBy: "tok ").count == 4)
        #expect(output.hasSuffix("data: [DONE]\n\n"))
    }
}

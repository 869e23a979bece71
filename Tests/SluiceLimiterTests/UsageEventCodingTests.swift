import Testing

@testable import SluiceLimiter

/// Usage events travel as one string each (see `UsageEventCoding`): whatever a value holds, it
/// comes back as it went in and cannot add, end or replace a field.
@Suite("Usage event coding")
struct UsageEventCodingTests {
    @Test func plainFieldsStayReadable() {
        let text = UsageEventCoding.encode([("request_id", "r-1"), ("model", "llama-3"), ("prompt_tokens", "12")])
        #expect(text == "request_id=r-1&model=llama-3&prompt_tokens=12")
        #expect(UsageEventCoding.decode(text) == ["request_id": "r-1", "model": "llama-3", "prompt_tokens": "12"])
    }

    /// A client's `x-request-id` trying to smuggle in a second cost, a line break, a stray
    /// escape, a NUL and non-ASCII text.
    @Test(arguments: ["x&cost_micro_usd=0", "a=b=c", "100%", "%41", "line\nbreak\r", "nul\u{0}", "ünïcödé ✓", "", "&&==%%"])
    func hostileValuesRoundTrip(value: String) throws {
        let text = UsageEventCoding.encode([("client_request_id", value), ("cost_micro_usd", "700")])
        let fields = try #require(UsageEventCoding.decode(text))
        #expect(fields == ["client_request_id": value, "cost_micro_usd": "700"])
        #expect(!text.contains("\n") && !text.contains("\u{0}"))
    }

    @Test(arguments: ["no-equals", "a=1&&b=2", "a=%4", "a=%zz", "a=1&a=2", "a=%FF", "=1&=2"])
    func malformedTextIsRefused(text: String) {
        #expect(UsageEventCoding.decode(text) == nil)
    }

    @Test func anEmptyNameAndValueAreFieldsLikeAnyOther() {
        #expect(UsageEventCoding.decode("=") == ["": ""])
    }
}

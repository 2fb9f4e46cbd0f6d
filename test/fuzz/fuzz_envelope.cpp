// libFuzzer harness: parse_envelope(), the structural check of a binary envelope
// (the binary receive function and decrypt_field run it on untrusted bytes).
//
// Invariants, against the rules of docs/format.md section 1:
//   - the verdict is exactly the documented one, in the documented order (length >= 38,
//     byte 0 == 1, byte 1 == 1, key id and DEK version non-zero), with a non-empty
//     detail on rejection;
//   - an accepted envelope's views lie inside the input and cover it exactly (header,
//     ciphertext, tag), its header fields are the bytes at their offsets, and
//     write_header() re-serializes the parsed header to the same 22 bytes;
//   - the AAD built from an accepted header has the documented layout;
//   - the text form of any bytes decodes back to the same bytes, with the same verdict.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "pg_envelope/encoding.hpp"
#include "pg_envelope/envelope_format.hpp"

using namespace pg_envelope;

namespace {

bool inside(ByteView part, ByteView whole) {
  return part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size();
}

const char* expected_problem(ByteView b) {
  if (b.size() < kEnvelopeOverhead) return "length";
  if (b[0] != kFormatV1) return "format";
  if (b[1] != kAlgAes256Gcm) return "algorithm";
  if (load_be32(b.data() + 2) == 0 || load_be32(b.data() + 6) == 0) return "dek";
  return nullptr;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const ByteView in(data, size);
  EnvelopeView view;
  const FormatProblem problem = parse_envelope(in, view);
  const char* expected = expected_problem(in);

  FUZZ_CHECK(static_cast<bool>(problem) == (expected != nullptr), "verdict differs from docs/format.md");
  if (problem) {
    FUZZ_CHECK(problem.detail[0] != '\0', "a rejection has an empty detail");
  } else {
    FUZZ_CHECK(size >= kEnvelopeOverhead, "accepted a value shorter than 38 bytes");
    FUZZ_CHECK(inside(view.header_bytes, in) && inside(view.ciphertext, in) && inside(view.tag, in),
               "a view points outside the input");
    FUZZ_CHECK(view.header_bytes.data() == data && view.header_bytes.size() == kHeaderSize, "header view");
    FUZZ_CHECK(view.ciphertext.data() == data + kHeaderSize && view.ciphertext.size() == size - kEnvelopeOverhead,
               "ciphertext view");
    FUZZ_CHECK(view.tag.data() == data + size - kGcmTagSize && view.tag.size() == kGcmTagSize, "tag view");

    const EnvelopeHeader& h = view.header;
    FUZZ_CHECK(h.format == data[0] && h.algorithm == data[1], "format/algorithm fields");
    FUZZ_CHECK(h.dek.key_id == load_be32(data + 2) && h.dek.version == load_be32(data + 6), "DEK reference fields");
    FUZZ_CHECK(h.dek.key_id != 0 && h.dek.version != 0, "accepted a zero key id or version");
    FUZZ_CHECK(std::memcmp(h.nonce, data + 10, kGcmNonceSize) == 0, "nonce field");

    std::uint8_t again[kHeaderSize];
    write_header(h, again);
    FUZZ_CHECK(std::memcmp(again, data, kHeaderSize) == 0, "write_header(parse(x)) != header of x");

    // AAD = header || type || 0x00, or header || type || 0x01 || context. The first
    // ciphertext byte picks the variant, the rest of the ciphertext is the context.
    const bool has_context = !view.ciphertext.empty() && (view.ciphertext[0] & 1);
    const std::string_view context =
        has_context ? std::string_view(reinterpret_cast<const char*>(view.ciphertext.data()) + 1,
                                       view.ciphertext.size() - 1)
                    : std::string_view();
    Bytes aad = {0xEE};  // stale content must not survive
    build_aad(view.header_bytes, PlainType::kBytea, has_context, context, aad);
    FUZZ_CHECK(aad.size() == kHeaderSize + 2 + context.size(), "AAD length");
    FUZZ_CHECK(std::memcmp(aad.data(), data, kHeaderSize) == 0, "AAD begins with the header");
    FUZZ_CHECK(aad[kHeaderSize] == static_cast<std::uint8_t>(PlainType::kBytea), "AAD type byte");
    FUZZ_CHECK(aad[kHeaderSize + 1] == (has_context ? 1 : 0), "AAD context flag");
    FUZZ_CHECK(context.empty() || std::memcmp(aad.data() + kHeaderSize + 2, context.data(), context.size()) == 0,
               "AAD context bytes");
  }

  // The text form of any bytes decodes back to them; decoding then checks the structure
  // with the same verdict.
  std::string text(text_form_length(size), '\0');
  write_text_form(in, text.data());
  FUZZ_CHECK(text.compare(0, kTextPrefix.size(), kTextPrefix) == 0, "text form prefix");
  Bytes back;
  const FormatProblem text_problem = decode_text_form(text, back);
  FUZZ_CHECK(static_cast<bool>(text_problem) == static_cast<bool>(problem), "text verdict != binary verdict");
  FUZZ_CHECK(back.size() == size && (size == 0 || std::memcmp(back.data(), data, size) == 0),
             "decode_text_form(write_text_form(x)) != x");
  return 0;
}

// Server-Sent Events read from a fetch() body. EventSource cannot send an Authorization
// header, so the console parses the stream itself: the format is a few lines of text
// (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation).

/** Yield {id, event, data} for each event in the response body, until the server closes it. */
export async function* readEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = blankEvent();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      // A \r at the end may be the first half of a \r\n: keep it for the next chunk.
      const held = buffer.endsWith("\r") ? "\r" : "";
      const lines = buffer.slice(0, buffer.length - held.length).split(/\r\n|\r|\n/);
      buffer = lines.pop() + held; // the last piece is a line not yet ended
      for (const line of lines) {
        if (line === "") {
          if (event.data.length > 0) yield { ...event, data: event.data.join("\n") };
          event = blankEvent(event.id);
        } else if (!line.startsWith(":")) {
          // Lines starting with ":" are comments, such as the server's ": keep-alive".
          const colon = line.indexOf(":");
          const field = colon === -1 ? line : line.slice(0, colon);
          const value = colon === -1 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "data") event.data.push(value);
          else if (field === "event") event.event = value;
          else if (field === "id") event.id = value;
        }
      }
    }
  } finally {
    // A consumer that stops early closes the connection; after the end this does nothing.
    await reader.cancel().catch(() => {});
  }
}

function blankEvent(lastId = null) {
  // The id carries over to later events, as EventSource's lastEventId does.
  return { id: lastId, event: "message", data: [] };
}

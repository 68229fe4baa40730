"""The door's hardware through gpiozero: relay (door strike), status LED, enrol button.

On a Pi gpiozero picks its default pin factory (lgpio on Pi 5 / Bookworm);
``simulate=True`` (``kiosk run --simulate``, the demo, the tests) uses
gpiozero's ``MockFactory`` so every device works without hardware.

Fail-secure: the relay is created switched off, :meth:`DoorHardware.lock`
switches it off, and :meth:`DoorHardware.close` switches it off before
releasing the pins. An error talking to the relay is re-raised after a
last attempt to switch it off. On Raspberry Pi OS a released output keeps
its last level, so after a crash :func:`switch_relay_off` (``kiosk
relay-off``, systemd's ``ExecStopPost``) drives it off from a fresh process.
"""

from __future__ import annotations

from dataclasses import dataclass

from kiosk.decision import Led
from kiosk.errors import HardwareError

# (on seconds, off seconds, blinks or None for forever); None = solid on.
LED_PATTERNS: dict[Led, tuple[float, float, int | None] | None] = {
    Led.IDLE: (0.05, 2.95, None),  # a short heartbeat: alive, nothing to do
    Led.FACE_SEEN: (0.15, 0.15, None),  # quick flicker: looking at you
    Led.GRANTED: None,  # solid: come in
    Led.DENIED: (0.5, 0.25, 3),  # three slow blinks: not you
    Led.ENROLLING: (0.6, 0.6, None),  # steady slow blink: hold still
    Led.LOCKED_OUT: (0.05, 0.2, None),  # fast strobe: wait
    Led.ERROR: (1.5, 0.3, None),  # mostly on with short gaps: needs attention
}


@dataclass(frozen=True)
class Pins:
    """BCM GPIO numbers and the relay board's polarity."""

    relay: int = 17
    led: int = 27
    button: int = 22
    relay_active_high: bool = False  # most opto-isolated relay boards switch on a LOW input


def switch_relay_off(pin: int, active_high: bool, pin_factory=None) -> None:
    """Drive the relay input on ``pin`` to its off level and release it (it keeps that level).

    Only the relay is touched: a broken LED or button must not stop the door
    being locked.
    """
    from gpiozero import OutputDevice
    from gpiozero.exc import GPIOZeroError

    try:
        relay = OutputDevice(pin, active_high=active_high, initial_value=False, pin_factory=pin_factory)
        try:
            relay.off()
        finally:
            relay.close()
    except (GPIOZeroError, OSError, RuntimeError) as error:
        raise HardwareError(f"cannot drive the relay on GPIO {pin} off: {error}. Is python3-lgpio installed and the "
                            "user in the gpio group? Until this works, the strike may still be powered.") from error


def make_pin_factory(simulate: bool):
    """gpiozero's MockFactory when simulating, else None (gpiozero's default)."""
    if not simulate:
        return None
    from gpiozero.pins.mock import MockFactory

    return MockFactory()


class DoorHardware:
    """Relay, LED and button, created together and released together."""

    def __init__(self, pins: Pins = Pins(), pin_factory=None, button_bounce: float = 0.05) -> None:
        from gpiozero import LED, Button, OutputDevice
        from gpiozero.exc import GPIOZeroError

        self.pins = pins
        self.pattern: Led | None = None
        try:
            self.relay = OutputDevice(pins.relay, active_high=pins.relay_active_high, initial_value=False, pin_factory=pin_factory)
            self.led = LED(pins.led, pin_factory=pin_factory)
            self.button = Button(pins.button, pull_up=True, bounce_time=button_bounce, pin_factory=pin_factory)
        except (GPIOZeroError, OSError, RuntimeError) as error:
            self._release_partial()
            raise HardwareError(
                f"cannot set up GPIO (relay {pins.relay}, LED {pins.led}, button {pins.button}): {error}. "
                "Is this a Raspberry Pi with python3-lgpio installed, and is the user in the gpio group? "
                "Use --simulate to run without hardware."
            ) from error

    def _release_partial(self) -> None:
        for name in ("relay", "led", "button"):
            device = getattr(self, name, None)
            if device is not None:
                if name == "relay":
                    device.off()
                device.close()

    @property
    def relay_on(self) -> bool:
        """True while the strike is energised (door open)."""
        return bool(self.relay.value)

    def unlock(self) -> None:
        """Energise the strike; if the GPIO fails, try to de-energise it and raise :class:`HardwareError`."""
        try:
            self.relay.on()
        except Exception as error:
            self.lock()
            raise HardwareError(f"relay on GPIO {self.pins.relay} could not be switched on ({error}); the door stays locked") from error

    def lock(self) -> None:
        """De-energise the strike (the fail-secure state).

        If even that fails, the error propagates: the service then exits and
        systemd's ``ExecStopPost=kiosk relay-off`` tries again from a fresh process.
        """
        self.relay.off()

    def show(self, pattern: Led) -> None:
        """Switch the LED to ``pattern`` (no-op when it already shows it)."""
        if pattern is self.pattern:
            return
        self.pattern = pattern
        blink = LED_PATTERNS[pattern]
        if blink is None:
            self.led.on()
        else:
            on_time, off_time, count = blink
            self.led.blink(on_time=on_time, off_time=off_time, n=count, background=True)

    @property
    def button_pressed(self) -> bool:
        return bool(self.button.is_pressed)

    def close(self) -> None:
        """Relay off first, then release every pin."""
        try:
            self.relay.off()
        finally:
            for device in (self.relay, self.led, self.button):
                device.close()

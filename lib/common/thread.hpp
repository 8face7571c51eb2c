// The library's own threads: started with the host's asynchronous signals
// (SIGINT, SIGTERM, SIGCHLD, SIGUSR1, ...) blocked, so that a signal the
// host handles is delivered to one of the host's threads, where it can
// interrupt a blocking call, and never runs the host's handler on a thread
// of the library's. Faults (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP,
// SIGABRT, SIGSYS) stay deliverable.
#pragma once

#include <signal.h>

#include <thread>
#include <utility>

namespace training_output {

template <class F>
std::thread start_thread(F&& f) {
    sigset_t all, saved;
    sigfillset(&all);
    for (int fault : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT, SIGSYS}) sigdelset(&all, fault);
    pthread_sigmask(SIG_BLOCK, &all, &saved);
    struct Restore {
        const sigset_t* saved;
        ~Restore() { pthread_sigmask(SIG_SETMASK, saved, nullptr); }
    } restore{&saved};
    return std::thread(std::forward<F>(f));
}

}  // namespace training_output
